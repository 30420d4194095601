"""The sendmail command lines that mail programs really pass to `jmapsync send`."""

from __future__ import annotations

import pytest

from jmapsync.send.args import ArgsError, parse

CASES = [
    # mutt/neomutt: $sendmail words, -B8BITMIME, -f, -N, -R, then "--" and To/Cc/Bcc
    (
        [
            "-oem",
            "-oi",
            "-B8BITMIME",
            "-f",
            "me@example.com",
            "-N",
            "failure,delay",
            "-R",
            "hdrs",
            "--",
            "a@example.org",
            "b@example.org",
        ],
        {
            "envelope_from": "me@example.com",
            "dsn_notify": "failure,delay",
            "dsn_return": "hdrs",
            "recipients": ["a@example.org", "b@example.org"],
        },
    ),
    # mutt with set sendmail="jmapsync send" and nothing else set
    (["--", "a@example.org"], {"recipients": ["a@example.org"], "envelope_from": None}),
    # git send-email: [-f ADDR] -i RCPT...
    (
        ["-f", "me@example.com", "-i", "a@example.org", "list@example.org"],
        {"envelope_from": "me@example.com", "recipients": ["a@example.org", "list@example.org"]},
    ),
    (["-i", "a@example.org"], {"recipients": ["a@example.org"]}),
    # classic sendmail -t, clustered flags, attached values
    (["-t"], {"from_headers": True, "recipients": []}),
    (["-ti"], {"from_headers": True}),
    (["-it", "-fme@example.com"], {"from_headers": True, "envelope_from": "me@example.com"}),
    (["-f<>", "x@y.z"], {"envelope_from": "", "recipients": ["x@y.z"]}),
    (["-f", "<me@example.com>", "x@y.z"], {"envelope_from": "me@example.com"}),
    (["-r", "me@example.com", "x@y.z"], {"envelope_from": "me@example.com"}),
    (["-F", "Me Myself", "-t"], {"full_name": "Me Myself", "from_headers": True}),
    (["-odb", "-oQ/tmp", "-bm", "-v", "x@y.z"], {"verbose": True, "recipients": ["x@y.z"]}),
    (["-V", "envid1", "-h", "3", "x@y.z"], {"envid": "envid1", "recipients": ["x@y.z"]}),
    # ours
    (["--account", "work", "-t"], {"account": "work", "from_headers": True}),
    (["--account=work", "--flush"], {"account": "work", "flush": True}),
    (["--help"], {"help": True}),
    # after "--" everything is a recipient, even what looks like an option
    (["--", "-t", "x@y.z"], {"recipients": ["-t", "x@y.z"], "from_headers": False}),
    (["a@b.c,d@e.f"], {"recipients": ["a@b.c,d@e.f"]}),
]


@pytest.mark.parametrize(("argv", "expected"), CASES)
def test_sendmail_command_lines(argv: list[str], expected: dict[str, object]) -> None:
    got = parse(argv)
    for key, value in expected.items():
        assert getattr(got, key) == value, (argv, key)


@pytest.mark.parametrize(
    "argv",
    [
        ["-bd"],  # daemon mode: an MTA's job, refused
        ["-bp"],
        ["-q"],
        ["-C", "/etc/mail/sendmail.cf"],
        ["-f"],  # a value is missing
        ["-o"],
        ["--account"],
        ["--bogus"],
        ["--flush=yes"],
    ],
)
def test_what_would_be_misread_is_refused(argv: list[str]) -> None:
    with pytest.raises(ArgsError):
        parse(argv)
