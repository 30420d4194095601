"""Test helpers to shape an account on the Cyrus test server (stdlib only).

* ``Account``: who/where (user, password, session_url, imap_port, server),
  with ``.imap()`` / ``.jmap()`` and a few one-shot shortcuts.
* ``Imap``: imaplib wrapper (context manager) -- folders with "/" as
  separator and UTF-8 names (sent as modified UTF-7), byte-exact APPEND with
  flags, keywords and internal date, flag/UID/expunge helpers.
* ``Jmap``: JMAP over plain HTTP with Basic auth (core + mail) -- ``call``,
  mailboxes, email query/get/set, upload + ``Email/import``, download.
* ``make_message``: deterministic RFC 5322 CRLF message bytes.

Cyrus quirks handled here: session URLs (apiUrl, uploadUrl, ...) are absolute
*paths*, resolved against the session URL; the first upload into a fresh
account can 404 when uploads run in parallel, so uploads are serialized (and
a 404 is retried); Cyrus refuses messages with bare LF ("Message contains
bare newlines"), so test mail is CRLF.  Every HTTP request uses a fresh
connection: Cyrus answers on a reused keep-alive connection ~40 ms late.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.header
import email.utils
import http.client
import imaplib
import json
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # tools.cyrus, from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.cyrus import mutf7_decode, mutf7_encode

__all__ = [
    "CORE",
    "MAIL",
    "SUBMISSION",
    "USING",
    "Account",
    "Imap",
    "ImapError",
    "Jmap",
    "JmapError",
    "imap_flags_for_keywords",
    "make_message",
    "mutf7_decode",
    "mutf7_encode",
]

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
USING = (CORE, MAIL)
HOST = "127.0.0.1"

# JMAP keyword <-> IMAP system flag (RFC 8621 section 4.1.1)
_SYSTEM_FLAGS = {
    "$seen": "\\Seen",
    "$flagged": "\\Flagged",
    "$answered": "\\Answered",
    "$draft": "\\Draft",
    "$deleted": "\\Deleted",
}


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_flags_for_keywords(keywords: Iterable[str]) -> list[str]:
    """JMAP keywords -> IMAP flags (``$seen`` -> ``\\Seen``, others as-is)."""
    return [_SYSTEM_FLAGS.get(k.lower(), k) for k in keywords]


# ------------------------------------------------------------- account --


@dataclass
class Account:
    """One account on the test server (what the ``account`` fixture returns)."""

    user: str
    password: str
    session_url: str
    imap_port: int
    server: Any = None  # tools.cyrus.CyrusServer, when known
    host: str = HOST
    _jmap: Jmap | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, server: Any, user: str, password: str = "secret") -> Account:  # noqa: S107
        """An existing user of a running tools.cyrus.CyrusServer."""
        return cls(user, password, server.session_url, server.imap_port, server)

    @property
    def http_port(self) -> int:
        return urllib.parse.urlsplit(self.session_url).port or 80

    def imap(self) -> Imap:
        """A new logged-in IMAP connection; use as ``with account.imap() as i:``."""
        return Imap(self)

    def jmap(self) -> Jmap:
        """The account's JMAP helper (one per Account; it caches the session)."""
        if self._jmap is None:
            self._jmap = Jmap(self)
        return self._jmap

    # one-shot shortcuts -------------------------------------------------
    def create_folder(self, path: str, **kw: Any) -> None:
        with self.imap() as i:
            i.create_folder(path, **kw)

    def append(self, folder: str, raw: bytes, **kw: Any) -> int:
        with self.imap() as i:
            return i.append(folder, raw, **kw)

    def append_many(self, folder: str, raws: Sequence[bytes], batch: int = 200) -> None:
        """Load many messages fast: IMAP MULTIAPPEND (RFC 3502) with LITERAL+
        literals, `batch` messages per command (~1000 messages/s on Cyrus,
        against ~20/s for one APPEND per message)."""
        with socket.create_connection((self.host, self.imap_port), timeout=60) as sock:
            f = sock.makefile("rb")

            def command(tag: str, data: bytes) -> None:
                sock.sendall(data)
                while True:
                    line = f.readline()
                    if not line:
                        raise ImapError(f"{tag}: connection closed")
                    if line.startswith(tag.encode() + b" "):
                        if not line.startswith(tag.encode() + b" OK"):
                            raise ImapError(f"{tag}: {line!r}")
                        return

            f.readline()  # greeting
            command("l", f"l LOGIN {_quote(self.user)} {_quote(self.password)}\r\n".encode())
            mailbox = Imap.mailbox(folder).encode()
            for n, start in enumerate(range(0, len(raws), batch)):
                parts = [f"a{n} APPEND ".encode() + mailbox]
                for raw in raws[start : start + batch]:
                    parts.append(f" {{{len(raw)}+}}\r\n".encode() + raw)
                command(f"a{n}", b"".join(parts) + b"\r\n")
            command("z", b"z LOGOUT\r\n")

    def import_message(self, raw: bytes, mailbox: str = "INBOX", **kw: Any) -> str:
        """Email/import into the mailbox with this IMAP-style path or role."""
        j = self.jmap()
        return j.import_message(raw, [j.mailbox_id(mailbox)], **kw)


# ---------------------------------------------------------------- IMAP --


class ImapError(RuntimeError):
    pass


_LIST_RE = re.compile(rb'^\((?P<flags>[^)]*)\) (?P<sep>"(?:[^"\\]|\\.)*"|NIL) (?P<name>.*)$', re.S)
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_ATOM_BAD = re.compile(r'[\x00-\x20(){%*"\\\]\x7f-\U0010ffff]')


def _unquote(raw: bytes) -> str:
    s = raw.decode("utf-8", "surrogateescape")
    if s.startswith('"') and s.endswith('"'):
        s = re.sub(r"\\(.)", r"\1", s[1:-1])
    return s


class Imap:
    """Logged-in IMAP connection for one account; folder paths use "/" and
    plain Unicode (encoded to modified UTF-7 here).

    The raw ``imaplib.IMAP4`` is ``self.conn`` for anything not wrapped.
    """

    def __init__(
        self,
        account: Account | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        host: str = HOST,
        timeout: float = 30.0,
    ) -> None:
        user = user or (account.user if account else None)
        password = password if password is not None else (account.password if account else None)
        port = port or (account.imap_port if account else None)
        if not (user and password is not None and port):
            raise ValueError("need an account or user, password and port")
        self.user = user
        self.conn = imaplib.IMAP4(account.host if account else host, port, timeout=timeout)
        try:
            self.conn.login(user, password)
        except BaseException:
            self.conn.shutdown()
            raise
        self._selected: tuple[str, bool] | None = None

    def __enter__(self) -> Imap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """LOGOUT and close the socket (idempotent)."""
        if self.conn.state == "LOGOUT":
            return
        try:
            self.conn.logout()
        except (imaplib.IMAP4.abort, OSError):
            self.conn.shutdown()

    # low level ------------------------------------------------------------
    def _ok(self, typ: str, data: list[Any], what: str) -> list[Any]:
        if typ != "OK":
            raise ImapError(f"{what}: {typ} {data!r}")
        return data

    def command(self, name: str, *args: str) -> list[Any]:
        """Run an IMAP command (args already quoted); raise unless OK."""
        typ, data = self.conn._simple_command(name, *args)
        data = self.conn._untagged_response(typ, data, name)[1]
        return self._ok(typ, data, f"{name} {' '.join(args)}")

    @staticmethod
    def mailbox(path: str) -> str:
        """IMAP wire form (quoted, modified UTF-7) of a folder path."""
        return _quote(mutf7_encode(path))

    def select(self, folder: str, readonly: bool = False) -> int:
        """SELECT (or EXAMINE) a folder; returns the number of messages."""
        typ, data = self.conn.select(self.mailbox(folder), readonly)
        self._ok(typ, data, f"SELECT {folder}")
        self._selected = (folder, readonly)
        return int(data[0] or 0)

    # folders --------------------------------------------------------------
    def list_details(self, pattern: str = "*") -> list[tuple[tuple[str, ...], str]]:
        """[(flags, path)] of every folder, e.g. ``(("\\HasNoChildren", "\\Sent"), "Sent")``."""
        typ, data = self.conn.list('""', _quote(mutf7_encode(pattern)))
        self._ok(typ, data, "LIST")
        out: list[tuple[tuple[str, ...], str]] = []
        for item in data:
            if item is None:
                continue
            if isinstance(item, tuple):  # name sent as literal
                head, lit = item
                m = _LIST_RE.match(head.rsplit(b" {", 1)[0] + b" X")
                if not m:
                    raise ImapError(f"cannot parse LIST line {item!r}")
                name = lit.decode("utf-8", "surrogateescape")
            else:
                m = _LIST_RE.match(item)
                if not m:
                    continue  # trailing piece of a literal line
                name = _unquote(m.group("name"))
            flags = tuple(m.group("flags").decode().split())
            out.append((flags, mutf7_decode(name)))
        return out

    def list_folders(self, pattern: str = "*") -> list[str]:
        """Folder paths ("INBOX", "Sent", "Work/Projects", "Reisen ✈"), sorted."""
        return sorted(
            name
            for flags, name in self.list_details(pattern)
            if "\\NoSelect" not in flags and "\\Noselect" not in flags
        )

    def subscribed(self) -> list[str]:
        typ, data = self.conn.lsub('""', "*")
        self._ok(typ, data, "LSUB")
        names = []
        for item in data:
            if isinstance(item, bytes) and (m := _LIST_RE.match(item)):
                names.append(mutf7_decode(_unquote(m.group("name"))))
        return sorted(names)

    def create_folder(
        self,
        path: str,
        *,
        special_use: str | None = None,
        parents: bool = True,
        subscribe: bool = True,
        exist_ok: bool = False,
    ) -> None:
        """CREATE a folder ("A/B/C").  With ``parents`` each missing ancestor
        is created (and subscribed) explicitly first; a bare CREATE A/B/C on
        Cyrus 3.6 also makes A and A/B ordinary selectable mailboxes, just not
        subscribed.  ``special_use``: e.g. ``"\\Archive"``."""
        parts = path.split("/")
        existing = set(self.list_folders()) if (parents or exist_ok) else set()
        todo = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)] if parents else [path]
        for p in todo:
            if p in existing and (p != path or exist_ok):
                continue
            args = [self.mailbox(p)]
            if special_use and p == path:
                args.append(f"(USE ({special_use}))")
            self.command("CREATE", *args)
            if subscribe:
                self.command("SUBSCRIBE", self.mailbox(p))

    def delete_folder(self, path: str) -> None:
        if self._selected and self._selected[0] == path:
            self.conn.unselect()
            self._selected = None
        self.command("DELETE", self.mailbox(path))

    def rename_folder(self, old: str, new: str) -> None:
        if self._selected and self._selected[0] == old:
            self.conn.unselect()
            self._selected = None
        self.command("RENAME", self.mailbox(old), self.mailbox(new))

    def subscribe(self, path: str) -> None:
        self.command("SUBSCRIBE", self.mailbox(path))

    def unsubscribe(self, path: str) -> None:
        self.command("UNSUBSCRIBE", self.mailbox(path))

    # messages -------------------------------------------------------------
    def append(
        self,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        keywords: Iterable[str] = (),
        internaldate: dt.datetime | float | str | None = None,
    ) -> int:
        """APPEND the bytes exactly as given (imaplib's own append would
        rewrite line ends); returns the new UID (APPENDUID).

        ``flags``: IMAP flags (``"\\Seen"``, ``"\\Flagged"``, ``"$Forwarded"``);
        ``keywords``: JMAP-style keywords (``"$seen"`` -> ``\\Seen``, others
        verbatim, Cyrus lower-cases them for JMAP); ``internaldate``: aware
        datetime, epoch seconds or an IMAP date-time string."""
        all_flags = [*flags, *imap_flags_for_keywords(keywords)]
        for f in all_flags:
            if _ATOM_BAD.search(f.lstrip("\\")):
                raise ValueError(f"invalid IMAP flag/keyword {f!r}")
        args = [self.mailbox(folder)]
        if all_flags:
            args.append("(" + " ".join(dict.fromkeys(all_flags)) + ")")
        if internaldate is not None:
            args.append(imaplib.Time2Internaldate(internaldate))
        self.conn.literal = raw  # type: ignore[assignment]
        typ, data = self.conn._simple_command("APPEND", *args)
        self._ok(typ, data, f"APPEND {folder}")
        m = _APPENDUID_RE.search(data[-1] if data and isinstance(data[-1], bytes) else b"")
        if not m:
            raise ImapError(f"APPEND {folder}: no APPENDUID in {data!r}")
        return int(m.group(2))

    def uids(self, folder: str) -> list[int]:
        self.select(folder, readonly=True)
        typ, data = self.conn.uid("SEARCH", "ALL")
        self._ok(typ, data, "UID SEARCH")
        return [int(x) for x in (data[0] or b"").split()]

    def fetch_flags(self, folder: str) -> dict[int, set[str]]:
        """{uid: {flags}} of every message in the folder (without \\Recent)."""
        if not self.select(folder, readonly=True):
            return {}
        typ, data = self.conn.uid("FETCH", "1:*", "(UID FLAGS)")
        self._ok(typ, data, "UID FETCH FLAGS")
        out: dict[int, set[str]] = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            if not line:
                continue
            m_uid = re.search(rb"UID (\d+)", line)
            m_flags = re.search(rb"FLAGS \(([^)]*)\)", line)
            if m_uid and m_flags:
                flags = set(m_flags.group(1).decode().split()) - {"\\Recent"}
                out[int(m_uid.group(1))] = flags
        return out

    def fetch(self, folder: str, uid: int) -> bytes:
        """The raw message bytes (BODY.PEEK[], does not set \\Seen)."""
        self.select(folder, readonly=True)
        typ, data = self.conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
        self._ok(typ, data, "UID FETCH BODY")
        for item in data:
            if isinstance(item, tuple):
                return bytes(item[1])
        raise ImapError(f"no message with UID {uid} in {folder}")

    def store(
        self, folder: str, uid: int | str, add: Iterable[str] = (), remove: Iterable[str] = ()
    ) -> None:
        """Add/remove IMAP flags on UID(s) (``"1:*"`` for all)."""
        self.select(folder)
        for op, flags in (("+FLAGS.SILENT", list(add)), ("-FLAGS.SILENT", list(remove))):
            if flags:
                typ, data = self.conn.uid("STORE", str(uid), op, "(" + " ".join(flags) + ")")
                self._ok(typ, data, f"UID STORE {op}")

    def delete(self, folder: str, uid: int | str) -> None:
        """\\Deleted + UID EXPUNGE of just these UID(s)."""
        self.store(folder, uid, add=["\\Deleted"])
        typ, data = self.conn.uid("EXPUNGE", str(uid))
        self._ok(typ, data, "UID EXPUNGE")

    def copy(self, folder: str, uid: int | str, dest: str) -> None:
        self.select(folder)
        typ, data = self.conn.uid("COPY", str(uid), self.mailbox(dest))
        self._ok(typ, data, "UID COPY")

    def move(self, folder: str, uid: int | str, dest: str) -> None:
        """RFC 6851 UID MOVE."""
        self.select(folder)
        typ, data = self.conn.uid("MOVE", str(uid), self.mailbox(dest))
        self._ok(typ, data, "UID MOVE")


# ---------------------------------------------------------------- JMAP --


class JmapError(RuntimeError):
    """An HTTP-level error or a JMAP method error (``type`` = error type)."""

    def __init__(self, message: str, type: str | None = None, response: Any = None) -> None:
        super().__init__(message)
        self.type = type
        self.response = response


_upload_lock = threading.Lock()


class Jmap:
    """JMAP (core + mail) for one account over HTTP Basic auth."""

    def __init__(
        self,
        account: Account | None = None,
        *,
        user: str | None = None,
        password: str | None = None,
        session_url: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.user = user or (account.user if account else "")
        self.password = password if password is not None else (account.password if account else "")
        self.session_url = session_url or (account.session_url if account else "")
        if not (self.user and self.session_url):
            raise ValueError("need an account or user, password and session_url")
        self.timeout = timeout
        self._session: dict[str, Any] | None = None
        self._auth = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    # HTTP -----------------------------------------------------------------
    def http(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection; url may be relative to the
        session URL.  Returns (status, lower-cased headers, body)."""
        full = urllib.parse.urljoin(self.session_url, url)
        parts = urllib.parse.urlsplit(full)
        if parts.scheme != "http":
            raise JmapError(f"only plain http is supported here: {full}")
        conn = http.client.HTTPConnection(
            parts.hostname or HOST, parts.port or 80, timeout=self.timeout
        )
        try:
            hdrs = {"Authorization": self._auth, **(headers or {})}
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            conn.request(method, path or "/", body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def _json(self, method: str, url: str, payload: Any = None) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        status, _, data = self.http(method, url, body, headers)
        if status != 200:
            raise JmapError(f"HTTP {status} for {method} {url}: {data[:500]!r}", response=data)
        return json.loads(data)

    # session ----------------------------------------------------------------
    @property
    def session(self) -> dict[str, Any]:
        if self._session is None:
            self._session = self._json("GET", self.session_url)
        return self._session

    def refresh_session(self) -> dict[str, Any]:
        self._session = None
        return self.session

    @property
    def account_id(self) -> str:
        return str(self.session["primaryAccounts"][MAIL])

    def _url(self, key: str) -> str:
        return urllib.parse.urljoin(self.session_url, str(self.session[key]))

    @property
    def api_url(self) -> str:
        return self._url("apiUrl")

    # method calls -------------------------------------------------------------
    def request(
        self, method_calls: Sequence[Sequence[Any]], using: Sequence[str] = USING
    ) -> dict[str, Any]:
        """POST a JMAP request; returns the whole response object."""
        calls = []
        for n, call in enumerate(method_calls):
            name, args = call[0], call[1]
            call_id = call[2] if len(call) > 2 else f"c{n}"
            calls.append([name, args, call_id])
        resp: dict[str, Any] = self._json(
            "POST", self.api_url, {"using": list(using), "methodCalls": calls}
        )
        return resp

    def call(
        self, method_calls: Sequence[Sequence[Any]], using: Sequence[str] = USING
    ) -> list[list[Any]]:
        """``[[name, args(, callId)], ...]`` -> methodResponses (errors included)."""
        return list(self.request(method_calls, using)["methodResponses"])

    def call1(self, name: str, args: Mapping[str, Any], using: Sequence[str] = USING) -> Any:
        """One method call; returns its arguments; raises JmapError on ``error``."""
        args = dict(args)
        if not name.startswith("Core/"):
            args.setdefault("accountId", self.account_id)
        responses = self.call([[name, args, "x"]], using)
        rname, rargs, _ = responses[0]
        if rname == "error":
            raise JmapError(f"{name}: {rargs}", rargs.get("type"), rargs)
        return rargs

    def _set(self, type_: str, **args: Any) -> dict[str, Any]:
        res: dict[str, Any] = self.call1(f"{type_}/set", args)
        for kind in ("notCreated", "notUpdated", "notDestroyed"):
            if res.get(kind):
                first = next(iter(res[kind].values()))
                raise JmapError(f"{type_}/set {kind}: {res[kind]}", first.get("type"), res)
        return res

    def state(self, type_: str = "Email") -> str:
        """Current state string of a data type (``Email``, ``Mailbox``, ``Thread``)."""
        return str(self.call1(f"{type_}/get", {"ids": []})["state"])

    # mailboxes ----------------------------------------------------------------
    def mailboxes(self, properties: Sequence[str] | None = None) -> list[dict[str, Any]]:
        args: dict[str, Any] = {"ids": None}
        if properties is not None:
            args["properties"] = list({"id", "name", "parentId", *properties})
        return list(self.call1("Mailbox/get", args)["list"])

    def mailbox_paths(self) -> dict[str, dict[str, Any]]:
        """{"Inbox": mb, "Work/Projects": mb, ...}: names joined along parentId."""
        mbs = self.mailboxes()
        by_id = {m["id"]: m for m in mbs}

        def path(m: dict[str, Any]) -> str:
            parts = []
            seen = set()
            while m is not None and m["id"] not in seen:
                seen.add(m["id"])
                parts.append(m["name"])
                m = by_id.get(m.get("parentId"))  # type: ignore[assignment]
            return "/".join(reversed(parts))

        return {path(m): m for m in mbs}

    def mailbox_id(self, path_or_role: str) -> str:
        """Id of the mailbox with this "/" path ("INBOX" and "Inbox" both
        work) or, failing that, with this role ("inbox", "sent", ...)."""
        paths = self.mailbox_paths()
        if path_or_role in paths:
            return str(paths[path_or_role]["id"])
        for m in paths.values():
            if m.get("role") == "inbox" and path_or_role.upper() == "INBOX":
                return str(m["id"])
        for m in paths.values():
            if m.get("role") == path_or_role.lower():
                return str(m["id"])
        raise KeyError(f"no mailbox {path_or_role!r}; have {sorted(paths)}")

    def create_mailbox(
        self,
        name: str,
        parent_id: str | None = None,
        *,
        role: str | None = None,
        is_subscribed: bool = True,
    ) -> str:
        obj: dict[str, Any] = {"name": name, "parentId": parent_id, "isSubscribed": is_subscribed}
        if role:
            obj["role"] = role
        res = self._set("Mailbox", create={"new": obj})
        return str(res["created"]["new"]["id"])

    def update_mailbox(self, mailbox_id: str, **patch: Any) -> None:
        """Mailbox/set update, e.g. ``name="X"``, ``parentId=None``, ``isSubscribed=False``."""
        self._set("Mailbox", update={mailbox_id: patch})

    def rename_mailbox(self, mailbox_id: str, name: str, **patch: Any) -> None:
        self.update_mailbox(mailbox_id, name=name, **patch)

    def destroy_mailbox(self, mailbox_id: str, *, remove_emails: bool = False) -> None:
        self._set("Mailbox", destroy=[mailbox_id], onDestroyRemoveEmails=remove_emails)

    # emails -----------------------------------------------------------------
    def email_ids(
        self,
        filter: Mapping[str, Any] | None = None,
        sort: Sequence[Mapping[str, Any]] | None = None,
    ) -> list[str]:
        """All Email ids (optionally filtered/sorted; pages through the result)."""
        ids: list[str] = []
        while True:
            args: dict[str, Any] = {"position": len(ids), "limit": 1000}
            if filter is not None:
                args["filter"] = dict(filter)
            if sort is not None:
                args["sort"] = [dict(s) for s in sort]
            res = self.call1("Email/query", args)
            ids.extend(res["ids"])
            total = res.get("total")
            if not res["ids"] or (total is not None and len(ids) >= total):
                return ids

    def emails_in(self, mailbox: str) -> list[str]:
        """Email ids in the mailbox with this path or role."""
        return self.email_ids({"inMailbox": self.mailbox_id(mailbox)})

    def get_emails(
        self, ids: Sequence[str], properties: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for n in range(0, len(ids), 500):
            args: dict[str, Any] = {"ids": list(ids[n : n + 500])}
            if properties is not None:
                args["properties"] = list(properties)
            res = self.call1("Email/get", args)
            if res.get("notFound"):
                raise JmapError(f"Email/get notFound: {res['notFound']}", "notFound", res)
            out.extend(res["list"])
        return out

    def get_email(self, email_id: str, properties: Sequence[str] | None = None) -> dict[str, Any]:
        return self.get_emails([email_id], properties)[0]

    def set_keywords(self, email_id: str, keywords: Mapping[str, bool] | Iterable[str]) -> None:
        """Replace all keywords of an email."""
        kw = dict(keywords) if isinstance(keywords, Mapping) else dict.fromkeys(keywords, True)
        self._set("Email", update={email_id: {"keywords": kw}})

    def add_keyword(self, email_id: str, keyword: str) -> None:
        self._set("Email", update={email_id: {f"keywords/{keyword}": True}})

    def remove_keyword(self, email_id: str, keyword: str) -> None:
        self._set("Email", update={email_id: {f"keywords/{keyword}": None}})

    def set_mailboxes(self, email_id: str, mailbox_ids: Iterable[str]) -> None:
        """Replace the mailboxIds of an email."""
        self._set("Email", update={email_id: {"mailboxIds": dict.fromkeys(mailbox_ids, True)}})

    def move(self, email_id: str, from_mailbox_id: str, to_mailbox_id: str) -> None:
        """Move with a mailboxIds patch (other memberships are kept)."""
        self._set(
            "Email",
            update={
                email_id: {
                    f"mailboxIds/{from_mailbox_id}": None,
                    f"mailboxIds/{to_mailbox_id}": True,
                }
            },
        )

    def destroy(self, *email_ids: str) -> None:
        self._set("Email", destroy=list(email_ids))

    # blobs ----------------------------------------------------------------------
    def upload(self, raw: bytes, type: str = "message/rfc822") -> str:
        """Upload a blob; returns its blobId.  Serialized and retried on 404
        (Cyrus creates a hidden upload folder on an account's first upload)."""
        url = self._url("uploadUrl").replace("{accountId}", self.account_id)
        with _upload_lock:
            for attempt in range(5):
                status, _, data = self.http("POST", url, raw, {"Content-Type": type})
                if status in (200, 201):
                    return str(json.loads(data)["blobId"])
                if status != 404 or attempt == 4:
                    raise JmapError(f"upload: HTTP {status}: {data[:300]!r}", response=data)
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def import_message(
        self,
        raw: bytes,
        mailbox_ids: Iterable[str],
        keywords: Mapping[str, bool] | Iterable[str] | None = None,
        received_at: dt.datetime | str | None = None,
        *,
        exist_ok: bool = False,
    ) -> str:
        """Upload + Email/import; returns the Email id.

        Cyrus derives Email ids from the bytes: importing bytes that already
        are in the account fails with ``alreadyExists`` (JmapError) and does
        NOT add the mailboxes; with ``exist_ok`` the existing id is returned."""
        blob = self.upload(raw)
        obj: dict[str, Any] = {"blobId": blob, "mailboxIds": dict.fromkeys(mailbox_ids, True)}
        if keywords is not None:
            obj["keywords"] = (
                dict(keywords) if isinstance(keywords, Mapping) else dict.fromkeys(keywords, True)
            )
        if received_at is not None:
            if isinstance(received_at, dt.datetime):
                received_at = received_at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            obj["receivedAt"] = received_at
        res = self.call1("Email/import", {"emails": {"m": obj}})
        if res.get("notCreated"):
            err = res["notCreated"]["m"]
            if exist_ok and err.get("type") == "alreadyExists" and err.get("existingId"):
                return str(err["existingId"])
            raise JmapError(f"Email/import: {err}", err.get("type"), res)
        return str(res["created"]["m"]["id"])

    def download(
        self, blob_id: str, name: str = "blob", type: str = "application/octet-stream"
    ) -> bytes:
        url = (
            self._url("downloadUrl")
            .replace("{accountId}", urllib.parse.quote(self.account_id, safe=""))
            .replace("{blobId}", urllib.parse.quote(blob_id, safe=""))
            .replace("{name}", urllib.parse.quote(name, safe=""))
            .replace("{type}", urllib.parse.quote(type, safe=""))
        )
        status, _, data = self.http("GET", url)
        if status != 200:
            raise JmapError(f"download {blob_id}: HTTP {status}", response=data)
        return data


# ------------------------------------------------------------- messages --

_EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_FILLER = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod "
    "tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, "
    "quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo. "
)


def _encode_header(value: str) -> str:
    if value.isascii():
        return value
    return email.header.Header(value, "utf-8").encode(linesep="\r\n")


def make_message(
    i: int,
    *,
    size: int | None = None,
    subject: str | None = None,
    body: str | None = None,
    sender: str = "Sender <sender@example.test>",
    to: str = "Recipient <rcpt@example.test>",
    date: dt.datetime | None = None,
    message_id: str | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    seed: str = "mailtools",
) -> bytes:
    """Deterministic RFC 5322 message bytes with CRLF line ends.

    Depends only on the arguments: Message-ID ``<I.SEED@mailtools.test>``,
    Date 2024-01-01 00:00 UTC + 37 min * i, subject ``Test message I``.
    Non-ASCII subject/sender/to are RFC 2047 encoded; a non-ASCII body is
    sent as 8bit UTF-8.  ``size``: pad the body with text so the whole
    message is exactly ``size`` bytes (ValueError if it cannot be that small).
    """
    date = date or (_EPOCH + dt.timedelta(minutes=37 * i))
    hdrs: list[tuple[str, str]] = [
        ("From", _encode_header(sender)),
        ("To", _encode_header(to)),
        ("Subject", _encode_header(subject if subject is not None else f"Test message {i}")),
        ("Date", email.utils.format_datetime(date)),
        ("Message-ID", message_id or f"<{i}.{seed}@mailtools.test>"),
        ("MIME-Version", "1.0"),
    ]
    text = body if body is not None else f"This is test message {i}.\n"
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    if text.isascii():
        hdrs += [
            ("Content-Type", "text/plain; charset=us-ascii"),
            ("Content-Transfer-Encoding", "7bit"),
        ]
    else:
        hdrs += [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Transfer-Encoding", "8bit"),
        ]
    extra = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    head = "".join(f"{k}: {v}\r\n" for k, v in [*hdrs, *extra]).encode()
    msg = head + b"\r\n" + text.replace("\n", "\r\n").encode()
    if size is None:
        return msg
    need = size - len(msg)
    if need < 0:
        raise ValueError(f"message {i} is already {len(msg)} bytes > size={size}")
    if need == 0:
        return msg
    if need == 1:  # widen the last body line by one byte
        return msg[:-2] + b"x\r\n"
    # deterministic ASCII filler lines of at most 78 chars + CRLF; the last
    # line takes what is left (never a lone byte: 81 left -> 77 + 2 + 2)
    cyc = _FILLER * 2
    pad = bytearray()
    pos = 0
    while (room := need - len(pad)) > 0:
        n = room - 2 if room <= 80 else 77 if room == 81 else 78
        pad += cyc[pos : pos + n].encode() + b"\r\n"
        pos = (pos + n) % len(_FILLER)
    return msg + bytes(pad)
