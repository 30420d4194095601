#!/usr/bin/env bash
# tools/build-httpd-wslay.sh [OUTDIR]
#
# Rebuild Cyrus httpd from Debian's own source package, with WebSocket
# (RFC 8887, libwslay) support, and put it in OUTDIR (default:
# ~/.cache/jmapsync) as httpd-wslay + httpd-wslay.version.  tools/cyrus.py
# runs this on its own when a WebSocket server is wanted and neither
# $JMAPSYNC_CYRUS_HTTPD nor a cached build for the installed version exists.
#
# Why: Debian 12's cyrus-caldav httpd is built without WebSocket support
# (`cyr_buildinfo` says "wslay": false) although libwslay-dev is among the
# build dependencies: bookworm's libwslay-dev ships no libwslay.pc, so
# configure's PKG_CHECK_MODULES([WSLAY], [libwslay >= 1.1.1]) fails and the
# feature is silently dropped.  Setting WSLAY_CFLAGS/WSLAY_LIBS by hand fixes
# that.  Only httpd differs (the dynamic symbol imports are identical except
# for wslay_* and zlib inflate*), so the result runs against Debian's
# libcyrus*.so.0 of the *same* package version.
#
# Needs root, deb-src access to Debian's archive (a sources file is added),
# ~600 MB of build dependencies, and 2-5 minutes on 2 cores.
set -euo pipefail
OUT=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/jmapsync}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
VER=$(dpkg-query -W -f='${Version}' cyrus-common 2>/dev/null || true)
[ -n "$VER" ] || { echo "install cyrus-common first (tools/cyrus.py does)" >&2; exit 1; }
UPVER=${VER%%-*}                       # 3.6.1

SRC=/etc/apt/sources.list.d/zz-debsrc-cyrus.sources
if ! apt-cache showsrc cyrus-imapd 2>/dev/null | grep -q "^Version: $VER\$"; then
    cat > "$SRC" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -q
fi

W=$(mktemp -d /tmp/cyrus-wslay-build.XXXXXX)
cd "$W"
echo "== build dir $W, cyrus $VER"
apt-get build-dep -y -q "cyrus-imapd=$VER" >build-dep.log 2>&1 || { tail build-dep.log; exit 1; }
apt-get install -y -q libwslay-dev libwslay1 >>build-dep.log 2>&1

# the security suite may lack the orig tarball: fetch what we can, and take
# the orig from any other version of the same upstream release
apt-get source -q --download-only "cyrus-imapd=$VER" >source.log 2>&1 || true
if [ ! -f "cyrus-imapd_$UPVER.orig.tar.gz" ]; then
    for v in $(apt-cache showsrc cyrus-imapd | sed -n 's/^Version: //p' | grep "^$UPVER-"); do
        apt-get source -q --download-only "cyrus-imapd=$v" >>source.log 2>&1 || true
        [ -f "cyrus-imapd_$UPVER.orig.tar.gz" ] && break
    done
fi
DEBTAR=$(ls "cyrus-imapd_$VER".debian.tar.* 2>/dev/null | head -1 || true)
[ -f "cyrus-imapd_$UPVER.orig.tar.gz" ] && [ -n "$DEBTAR" ] || { cat source.log; echo "could not fetch the sources" >&2; exit 1; }
tar xzf "cyrus-imapd_$UPVER.orig.tar.gz"
cd "cyrus-imapd-$UPVER"
tar xf "../$DEBTAR"
grep -q "($VER)" debian/changelog || { echo "debian/changelog is not $VER" >&2; exit 1; }

dpkg-source --before-build . >../patch.log       # applies debian/patches
export WSLAY_CFLAGS=" " WSLAY_LIBS="-lwslay" DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)"
dh_autoreconf >../autoreconf.log 2>&1
debian/rules override_dh_auto_configure >../configure.log 2>&1
grep -q '^#define HAVE_WSLAY' config.h || { echo "configure did not enable wslay" >&2; exit 1; }
printf 'print-bs:\n\t@echo $(BUILT_SOURCES)\n' > ../bs.mk
make -s -j"$(nproc)" $(make -s -f Makefile -f ../bs.mk print-bs) >../make.log 2>&1
make -j"$(nproc)" imap/httpd >>../make.log 2>&1
mkdir -p "$OUT"
strip -o "$OUT/httpd-wslay" imap/.libs/httpd
echo "$VER" > "$OUT/httpd-wslay.version"
# sanity: same imports as Debian's httpd apart from wslay/inflate
diff <(nm -D --undefined-only imap/.libs/httpd | awk '{print $2}' | grep -v -e '^wslay_' -e '^inflate' | sort) \
     <(nm -D --undefined-only /usr/lib/cyrus/bin/httpd | awk '{print $2}' | sort) >/dev/null ||
    echo "WARNING: dynamic imports differ from Debian's httpd beyond wslay/inflate" >&2
echo "== wrote $OUT/httpd-wslay for cyrus $VER ($(stat -c %s "$OUT/httpd-wslay") bytes)"
cd / && rm -rf "$W"   # ~400 MB; on failure it stays, with its logs
