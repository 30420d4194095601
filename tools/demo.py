#!/usr/bin/env python3
"""jmapsync at work, without an account: `./dev demo`.

Starts a throwaway Cyrus IMAP server on 127.0.0.1 (tools/cyrus.py), loads
sample mail into it (nested and non-ASCII folders, flags, one message in two
folders), mirrors it with the real `jmapsync sync` into ./demo-mail, lists
what arrived, then changes things on the server (a flag, a move, a delete, a
new delivery) and syncs again to show the incremental pass, then changes
things locally as mutt would (read, move, delete, a new draft) and syncs to
show them reach the server.  The server is stopped and removed at the end;
./demo-mail stays so you can read it:

    mutt -f demo-mail/INBOX
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from mailtools import Account, make_message  # noqa: E402

from tools.cyrus import CyrusServer  # noqa: E402

# $JMAPSYNC_DEMO_DIR: where the mirror and the demo's state go (the test of
# the demo uses a temporary one); default: the checkout, as the README says.
_BASE = Path(os.environ.get("JMAPSYNC_DEMO_DIR") or ROOT)
OUT = _BASE / "demo-mail"
WORK = _BASE / ".demo"

SAMPLES = [
    # (folder, subject, keywords)
    ("INBOX", "Welcome to jmapsync", ["$seen"]),
    ("INBOX", "Lunch tomorrow?", []),
    ("INBOX", "Your invoice #4711", ["$flagged"]),
    ("INBOX", "Re: quarterly report", ["$seen", "$answered"]),
    ("Work", "Build failed on main", ["$seen"]),
    ("Work/Projects", "Project kickoff", ["$seen", "project-x"]),
    ("Work/Projects/Alpha", "Alpha: first milestone", []),
    ("Lists/python-dev", "[python-dev] PEP discussion", ["$seen"]),
    ("Reisen ✈ Übersicht", "Grüße aus München ✈", ["$seen", "$flagged"]),
    ("Archive", "Old newsletter", ["$seen"]),
    ("Sent", "Re: Lunch tomorrow?", ["$seen"]),
    ("Drafts", "Unfinished thoughts", ["$seen", "$draft"]),
]


def run(*args: str) -> None:
    cmd = [sys.executable, "-m", "jmapsync", "-c", str(WORK / "config.ini"), *args]
    print(f"\n$ jmapsync {' '.join(args)}", flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)})


def tree() -> None:
    print(f"\n{OUT.name}/  (folder: files in new/ + cur/)")
    for cur in sorted(OUT.rglob("cur")):
        folder = cur.parent
        files = [f"new/{p.name}" for p in sorted((folder / "new").iterdir())]
        files += [f"cur/{p.name}" for p in sorted(cur.iterdir())]
        print(f"  {folder.relative_to(OUT)}: {len(files)}")
        for name in files[:3]:
            print(f"      {name}")


def by_subject(subject: str) -> Path:
    for p in OUT.rglob("*.jmapsync*"):
        if f"Subject: {subject}\n".encode() in p.read_bytes():
            return p
    raise LookupError(subject)


def local_changes() -> None:
    """The renames, moves, unlinks and new files a mail program makes."""
    unread = by_subject("Alpha: first milestone")  # read it: new/X -> cur/X:2,S
    unread.rename(unread.parent.parent / "cur" / (unread.name + ":2,S"))
    kickoff = by_subject("Project kickoff")  # move it to Archive
    kickoff.rename(OUT / "Archive" / "cur" / kickoff.name)
    by_subject("Old newsletter").unlink()  # delete it: to Trash on the server
    draft = make_message(100, subject="Draft: reply to Bob", seed="demo")
    (OUT / "Drafts" / "cur" / "1732560000.M1P1.demo:2,DS").write_bytes(
        draft.replace(b"\r\n", b"\n")  # a new message, as mutt writes it
    )


def main() -> int:
    if OUT.exists():
        if not (WORK / "config.ini").exists():
            print(f"{OUT} exists and is not a previous demo: not touching it", file=sys.stderr)
            return 1
        shutil.rmtree(OUT)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    server_dir = tempfile.mkdtemp(prefix="jmapsync-demo-", dir="/tmp")
    os.chmod(server_dir, 0o755)  # noqa: S103 - Cyrus runs as user cyrus and must reach it
    print("starting a throwaway Cyrus IMAP 3.6 server on 127.0.0.1 ...", flush=True)
    server = CyrusServer(server_dir).start()
    try:
        server.add_user("demo")
        account = Account.of(server, "demo")
        with account.imap() as imap:
            for n, (folder, subject, kws) in enumerate(SAMPLES):
                if folder not in ("INBOX", "Archive", "Sent", "Drafts"):
                    imap.create_folder(folder, exist_ok=True)
                imap.append(folder, make_message(n, subject=subject, seed="demo"), keywords=kws)
        j = account.jmap()
        both = j.emails_in("Work")[0]
        j.set_mailboxes(both, [j.mailbox_id("Work"), j.mailbox_id("Archive")])
        print(f"loaded {len(SAMPLES)} messages for user 'demo' at {server.session_url}")

        (WORK / "config.ini").write_text(
            "[jmapsync]\n"
            f"state_dir = {WORK / 'state'}\n"
            "[account demo]\n"
            f"session_url = {server.session_url}\n"
            "username = demo\n"
            "password = secret\n"
            f"maildir = {OUT}\n"
            "layout = verbatim\n"
            "direction = two-way\n"
        )
        (WORK / "config.ini").chmod(0o600)  # it holds the demo password
        run("check")
        run("sync")
        tree()

        print("\nnow, on the server: flag one, move one, delete one, deliver one ...")
        inbox = j.emails_in("INBOX")
        j.add_keyword(inbox[1], "$flagged")
        j.move(inbox[0], j.mailbox_id("INBOX"), j.mailbox_id("Archive"))
        j.destroy(j.emails_in("Lists/python-dev")[0])
        j.import_message(
            make_message(99, subject="Fresh delivery", seed="demo"), [j.mailbox_id("INBOX")]
        )
        run("sync")
        tree()

        print("\nnow, locally, as mutt would: read one, move one to Archive, delete one,")
        print("save a draft ...")
        local_changes()
        run("sync")
        names = {m["id"]: path for path, m in j.mailbox_paths().items()}
        print("\non the server now:")
        shown = ("Alpha: first milestone", "Project kickoff", "Old newsletter")
        for e in j.get_emails(j.email_ids(), ["subject", "mailboxIds", "keywords"]):
            if e["subject"] in shown or e["subject"].startswith("Draft:"):
                where = ", ".join(sorted(names[m] for m in e["mailboxIds"]))
                print(f"  {e['subject']!r:28} in {where:22} {sorted(e['keywords'])}")
        run("status")
        run("verify")
        tree()
    finally:
        server.stop()
        shutil.rmtree(server_dir, ignore_errors=True)
    print(f"\nThe mirror stays in {OUT}: try `mutt -f {OUT}/INBOX`.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
