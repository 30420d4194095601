"""PURE: the sendmail command line that mail programs hand to `jmapsync send`.

What they really pass (read in their sources, 2025):

- mutt / neomutt (`send/sendmail.c` mutt_invoke_sendmail): the words of
  `$sendmail`, then `-B8BITMIME` (8-bit body and `$use_8bit_mime`), `-f ADDR`
  (`$use_envelope_from`), `-N NOTIFY` / `-R RET` (`$dsn_notify`,
  `$dsn_return`), then `--`, then every To, Cc and Bcc address.  Mutt's
  default `$sendmail` is `/usr/sbin/sendmail -oem -oi`, so users who copy it
  pass those too.
- git send-email (`git-send-email.perl` send_message): `[-f ADDR] -i RCPT...`
  through `sh -c "$sendmail_cmd \\"$@\\""`.

Everything sendmail(8) documents for message submission is accepted;
options that only make sense for a real MTA (`-bd`, `-q`, `-C`) are refused
so a wrong invocation is noticed instead of silently doing something else.
Single-letter flags cluster as with getopt (`-ti`), and an option's value may
be attached (`-fme@example.com`) or the next word (`-f me@example.com`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

USAGE = """\
usage: jmapsync [-c CONFIG] send [--account NAME] [-t] [-i] [-oi] [-f FROM] [RECIPIENT ...]
       jmapsync [-c CONFIG] send --flush [--account NAME]

A sendmail for mutt, neomutt and git send-email: reads one message on stdin
and sends it with JMAP EmailSubmission; offline, it is queued in the outbox
and sent by the next `jmapsync sync`, the daemon, or `send --flush`.

  RECIPIENT ...   envelope recipients (commas allowed)
  -t              also take the recipients from To, Cc and Bcc
  -f FROM, -r     envelope sender (default: the Identity's address)
  -F NAME         full name for a From header the message lacks
  -i, -oi         accepted; the message always ends at end of input
  --account NAME  send through this account (default: the one whose
                  identities or `addresses` match From)
  --flush         send every queued message now, also those the server refused
  -oem, -B8BITMIME, -N, -R, -V, -v, -bm, -odb ...   accepted (sendmail compatibility)
"""

# Flags without a value.
_FLAGS = frozenset("tiv")
# Options with a value, attached or in the next word.
_WITH_VALUE = frozenset("frFBNRVhOLp")


class ArgsError(ValueError):
    """The command line is wrong (sendmail's EX_USAGE)."""


@dataclass
class SendArgs:
    """The parsed command line."""

    account: str | None = None
    flush: bool = False
    help: bool = False
    from_headers: bool = False  # -t
    envelope_from: str | None = None  # -f / -r; "" for the null sender <>
    full_name: str | None = None  # -F
    verbose: bool = False
    dsn_notify: str | None = None  # -N
    dsn_return: str | None = None  # -R
    envid: str | None = None  # -V
    recipients: list[str] = field(default_factory=list)  # as given, commas not split


def parse(argv: list[str]) -> SendArgs:
    """Parse sendmail-style arguments; ArgsError on anything we would misread."""
    out = SendArgs()
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            out.recipients.extend(argv[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name == "account":
                if not eq:
                    if i >= len(argv):
                        raise ArgsError("--account needs a NAME")
                    value, i = argv[i], i + 1
                out.account = value
            elif name == "flush" and not eq:
                out.flush = True
            elif name == "help" and not eq:
                out.help = True
            else:
                raise ArgsError(f"unknown option {arg}")
            continue
        if not arg.startswith("-") or arg == "-":
            out.recipients.append(arg)
            continue
        i = _cluster(arg, argv, i, out)
    return out


def _cluster(arg: str, argv: list[str], i: int, out: SendArgs) -> int:
    """One word of single-letter options (`-ti`, `-fme@x`, `-oem`); returns the
    index of the next word to read."""
    pos = 1
    while pos < len(arg):
        letter = arg[pos]
        rest = arg[pos + 1 :]
        if letter in _FLAGS:
            if letter == "t":
                out.from_headers = True
            elif letter == "v":
                out.verbose = True
            # -i: a line with a lone "." never ends the message here -- we read
            # to the end of input always (as msmtp does), so mutt without -oi
            # cannot lose the rest of a message.
            pos += 1
            continue
        if letter == "o":
            # sendmail -oX[value]: -oi (same as -i), -oem (errors by mail),
            # -odb (background delivery), ... none changes what we send.
            if not rest:
                raise ArgsError("-o needs an option letter (e.g. -oi)")
            return i
        if letter == "b":
            if rest not in ("m", ""):
                raise ArgsError(f"-b{rest}: only -bm (deliver a message) is supported")
            return i
        if letter in _WITH_VALUE:
            if rest:
                value = rest
            elif i < len(argv):
                value, i = argv[i], i + 1
            else:
                raise ArgsError(f"-{letter} needs a value")
            _set_value(letter, value, out)
            return i
        raise ArgsError(f"unknown option -{letter} (in {arg})")
    return i


def _set_value(letter: str, value: str, out: SendArgs) -> None:
    if letter in "fr":
        address = value.strip()
        if address.startswith("<") and address.endswith(">"):
            address = address[1:-1].strip()
        out.envelope_from = address
    elif letter == "F":
        out.full_name = value
    elif letter == "N":
        out.dsn_notify = value
    elif letter == "R":
        out.dsn_return = value
    elif letter == "V":
        out.envid = value
    # -B (body type), -h (hop count), -O (long option), -L (log tag), -p
    # (protocol): accepted and without effect on what JMAP sends.
