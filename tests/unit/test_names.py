"""Mailbox tree <-> folder paths: awkward names as case tables, then properties."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jmapsync.errors import ProtocolError, Retry
from jmapsync.maildir.names import (
    MAX_DEPTH,
    NAME_MAX,
    Layout,
    MailboxNode,
    UnsafeName,
    escape_component,
    folder_paths,
    is_within,
    mailbox_path_components,
    map_folders,
    unescape_component,
)

ROOT = PurePosixPath("/home/user/Mail/account")
LAYOUTS: tuple[Layout, ...] = ("verbatim", "maildir++")


def box(id_: str, name: str, parent: str | None = None, role: str | None = None) -> MailboxNode:
    return MailboxNode(id=id_, name=name, parent_id=parent, role=role)


# -- escaping one name --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "top_level", "verbatim", "maildirpp"),
    [
        ("Archive", True, "Archive", "Archive"),
        ("a.b", True, "a.b", "a%2Eb"),
        ("..", True, "%2E.", "%2E%2E"),
        (".", True, "%2E", "%2E"),
        (".hidden", True, "%2Ehidden", "%2Ehidden"),
        (" leading space", True, " leading space", " leading space"),
        ("trailing ", True, "trailing ", "trailing "),
        ("with/slash", True, "with%2Fslash", "with%2Fslash"),
        ("/", True, "%2F", "%2F"),
        ("100%", True, "100%25", "100%25"),
        ("%2E", True, "%252E", "%252E"),  # an escape-looking name stays reversible
        ("tab\there", True, "tab%09here", "tab%09here"),
        ("nul\x00", True, "nul%00", "nul%00"),
        ("del\x7f", True, "del%7F", "del%7F"),
        ("c1\x85", True, "c1%C2%85", "c1%C2%85"),  # C1 control: both UTF-8 bytes
        ("cur", True, "%63ur", "cur"),
        ("new", True, "%6Eew", "new"),
        ("tmp", True, "%74mp", "tmp"),
        ("cur", False, "%63ur", "cur"),
        ("new", False, "%6Eew", "new"),
        ("tmp", False, "%74mp", "tmp"),
        ("curry", False, "curry", "curry"),
        ("Cur", False, "Cur", "Cur"),  # case-sensitive, as on POSIX filesystems
        ("INBOX", True, "%49NBOX", "%49NBOX"),
        ("INBOX", False, "INBOX", "INBOX"),
        ("Inbox", True, "Inbox", "Inbox"),
        ("R&D", True, "R&D", "R&D"),
        ("Reisen ✈ Übersicht", True, "Reisen ✈ Übersicht", "Reisen ✈ Übersicht"),
    ],
)
def test_escape_component_table(name: str, top_level: bool, verbatim: str, maildirpp: str) -> None:
    assert escape_component(name, "verbatim", top_level=top_level) == verbatim
    assert escape_component(name, "maildir++", top_level=top_level) == maildirpp
    assert unescape_component(verbatim) == name
    assert unescape_component(maildirpp) == name


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("x" * (NAME_MAX + 1), "longer than"),
        ("é" * 128, "longer than"),  # 256 bytes of UTF-8 in 128 characters
        ("%" * 86, "longer than"),  # 258 bytes once escaped
        ("lone \udcff surrogate", "not valid Unicode"),
    ],
)
def test_escape_component_refuses(layout: Layout, name: str, why: str) -> None:
    with pytest.raises(UnsafeName, match=why):
        escape_component(name, layout, top_level=True)


@pytest.mark.parametrize("name", ["x" * NAME_MAX, "é" * 127, "%" * 85])
def test_escape_component_accepts_exactly_name_max_bytes(name: str) -> None:
    assert len(escape_component(name, "verbatim", top_level=True).encode()) <= NAME_MAX


def test_unsafe_name_is_a_fatal_protocol_error() -> None:
    assert issubclass(UnsafeName, ProtocolError)
    assert UnsafeName.retry is Retry.FATAL


@pytest.mark.parametrize(
    "bad", ["%", "%2", "a%zz", "%2f", "%G0", "%C2", "%C2x", "%ED%A0%80", "\udcff"]
)
def test_unescape_component_is_strict(bad: str) -> None:
    with pytest.raises(ValueError, match=r"escape|UTF-8"):
        unescape_component(bad)


def test_an_unknown_layout_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="layout"):
        escape_component("a", "maildir", top_level=True)  # type: ignore[arg-type]


# -- whole trees --------------------------------------------------------------

TREE = [
    box("i", "Inbox", role="inbox"),
    box("ic", "cur", "i"),
    box("ir", "Receipts", "i"),
    box("ir24", "2024", "ir"),
    box("a", "Archive"),
    box("at", "tmp", "a"),
    box("ab", "a.b"),
    box("fake", "INBOX"),
    box("tc", "cur"),
    box("h", ".hidden"),
    box("r", "Reisen ✈ Übersicht"),
    box("l1", "L1"),
    box("l2", "L2", "l1"),
    box("l3", "L3", "l2"),
    box("l4", "L4", "l3"),
    box("l5", "L5", "l4"),
]

# id -> (verbatim path, maildir++ path, names read back from either path)
TREE_EXPECTED = {
    "i": ("INBOX", "", ["INBOX"]),
    "ic": ("INBOX/%63ur", ".INBOX.cur", ["INBOX", "cur"]),
    "ir": ("INBOX/Receipts", ".INBOX.Receipts", ["INBOX", "Receipts"]),
    "ir24": ("INBOX/Receipts/2024", ".INBOX.Receipts.2024", ["INBOX", "Receipts", "2024"]),
    "a": ("Archive", ".Archive", ["Archive"]),
    "at": ("Archive/%74mp", ".Archive.tmp", ["Archive", "tmp"]),
    "ab": ("a.b", ".a%2Eb", ["a.b"]),
    # Reads back as ["INBOX"] like the inbox: the documented ambiguity.
    "fake": ("%49NBOX", ".%49NBOX", ["INBOX"]),
    "tc": ("%63ur", ".cur", ["cur"]),
    "h": ("%2Ehidden", ".%2Ehidden", [".hidden"]),
    "r": ("Reisen ✈ Übersicht", ".Reisen ✈ Übersicht", ["Reisen ✈ Übersicht"]),
    "l1": ("L1", ".L1", ["L1"]),
    "l5": ("L1/L2/L3/L4/L5", ".L1.L2.L3.L4.L5", ["L1", "L2", "L3", "L4", "L5"]),
}


@pytest.mark.parametrize("layout_index", [0, 1], ids=LAYOUTS)
@pytest.mark.parametrize("mailbox_id", sorted(TREE_EXPECTED))
def test_folder_paths_of_the_awkward_tree(layout_index: int, mailbox_id: str) -> None:
    layout = LAYOUTS[layout_index]
    expected_path = TREE_EXPECTED[mailbox_id][layout_index]
    paths = folder_paths(TREE, layout)
    assert paths[mailbox_id] == expected_path
    assert mailbox_path_components(expected_path, layout) == TREE_EXPECTED[mailbox_id][2]
    assert is_within(ROOT, ROOT / expected_path)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_an_inbox_with_a_parent_is_still_anchored_at_inbox(layout: Layout) -> None:
    paths = folder_paths([box("p", "Parent"), box("i", "Inbox", "p", "inbox")], layout)
    assert paths["i"] == ("INBOX" if layout == "verbatim" else "")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("tree", "match"),
    [
        ([box("a", "")], "empty mailbox name"),
        ([box("a", "x" * 256)], "longer than"),
        ([box("a", "A"), box("a", "B")], "twice"),
        ([box("i1", "Inbox", role="inbox"), box("i2", "INBOX", role="inbox")], "share"),
        ([box("a", "Same"), box("b", "Same")], "share"),
        ([box("p", "P"), box("a", "Same", "p"), box("b", "Same", "p")], "share"),
        ([box("a", "A", "a")], "own ancestor"),
        ([box("a", "A", "b"), box("b", "B", "a")], "own ancestor"),
        # A cycle through the inbox: the inbox would anchor it, but we refuse.
        ([box("i", "Inbox", "a", "inbox"), box("a", "A", "i")], "own ancestor"),
        ([box("a", "A", "gone")], "unknown parent"),
    ],
)
def test_folder_paths_refuses_unsafe_trees(
    layout: Layout, tree: list[MailboxNode], match: str
) -> None:
    with pytest.raises(UnsafeName, match=match):
        folder_paths(tree, layout)


def test_a_collision_names_both_mailboxes() -> None:
    with pytest.raises(UnsafeName) as info:
        folder_paths([box("a", "Same"), box("b", "Same")], "verbatim")
    assert info.value.fields["mailbox_ids"] == ("a", "b")
    assert "'a'" in str(info.value)
    assert "'b'" in str(info.value)


def test_an_unsafe_name_error_names_the_mailbox() -> None:
    with pytest.raises(UnsafeName, match="'bad'") as info:
        folder_paths([box("bad", "")], "verbatim")
    assert info.value.fields["mailbox_id"] == "bad"


def chain(depth: int, *, inbox_on_top: bool) -> list[MailboxNode]:
    """A single line of mailboxes; one-letter names keep maildir++ under NAME_MAX."""
    nodes = [box("m0", "x", role="inbox" if inbox_on_top else None)]
    nodes += [box(f"m{i}", "x", f"m{i - 1}") for i in range(1, depth)]
    return nodes


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("inbox_on_top", [False, True])
def test_depth_limit_is_64_levels(layout: Layout, inbox_on_top: bool) -> None:
    deepest = folder_paths(chain(MAX_DEPTH, inbox_on_top=inbox_on_top), layout)[f"m{MAX_DEPTH - 1}"]
    separator = "/" if layout == "verbatim" else "."
    assert len(deepest.lstrip(".").split(separator)) == MAX_DEPTH
    assert len(mailbox_path_components(deepest, layout)) == MAX_DEPTH
    with pytest.raises(UnsafeName, match="levels deep"):
        folder_paths(chain(MAX_DEPTH + 1, inbox_on_top=inbox_on_top), layout)
    with pytest.raises(ValueError, match="levels deep"):
        mailbox_path_components(deepest + separator + "x", layout)


def test_maildirpp_limits_the_whole_folder_name_to_name_max() -> None:
    """In maildir++ ".A.B" is ONE directory, so NAME_MAX applies to all of it."""
    ok = folder_paths([box("a", "a" * 127), box("b", "b" * 126, "a")], "maildir++")
    assert len(ok["b"]) == NAME_MAX
    with pytest.raises(UnsafeName, match="over 255 bytes"):
        folder_paths([box("a", "a" * 127), box("b", "b" * 127, "a")], "maildir++")
    # The same tree is fine in verbatim, where each level is its own directory.
    folder_paths([box("a", "a" * 127), box("b", "b" * 127, "a")], "verbatim")


# -- reading paths back -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "layout", "names"),
    [
        ("INBOX", "verbatim", ["INBOX"]),
        ("INBOX/INBOX", "verbatim", ["INBOX", "INBOX"]),
        ("A/INBOX", "verbatim", ["A", "INBOX"]),
        ("%49NBOX", "verbatim", ["INBOX"]),
        ("A/%2E.", "verbatim", ["A", ".."]),
        ("100%25", "verbatim", ["100%"]),
        ("", "maildir++", ["INBOX"]),
        (".INBOX.X", "maildir++", ["INBOX", "X"]),
        (".cur", "maildir++", ["cur"]),
        (".a%2Eb.c", "maildir++", ["a.b", "c"]),
        (".x%2Fy", "maildir++", ["x/y"]),
    ],
)
def test_mailbox_path_components_reads_back(path: str, layout: Layout, names: list[str]) -> None:
    assert mailbox_path_components(path, layout) == names


@pytest.mark.parametrize(
    ("path", "layout"),
    [
        ("", "verbatim"),  # the root is not a folder in verbatim
        ("/", "verbatim"),
        ("/abs", "verbatim"),
        ("a//b", "verbatim"),
        ("a/", "verbatim"),
        ("cur", "verbatim"),  # a Maildir's own directory, not a folder
        ("INBOX/new", "verbatim"),
        ("A/tmp", "verbatim"),
        (".hidden", "verbatim"),
        ("..", "verbatim"),
        ("A/..", "verbatim"),
        ("100%", "verbatim"),
        ("a%2fb", "verbatim"),  # lowercase hex is not what we write
        ("%41", "verbatim"),  # an escape we would not write
        ("a\tb", "verbatim"),
        ("x" * 256, "verbatim"),
        ("\udcff", "verbatim"),  # non-UTF-8 directory name via surrogateescape
        ("INBOX", "maildir++"),  # no leading dot
        ("Archive", "maildir++"),
        (".", "maildir++"),
        ("..", "maildir++"),
        (".INBOX", "maildir++"),  # the inbox is the root
        (".a..b", "maildir++"),
        (".a.", "maildir++"),
        (".a/b", "maildir++"),
        (".INBOX.%2e", "maildir++"),
        ("." + "a" * 255, "maildir++"),
    ],
)
def test_mailbox_path_components_rejects_paths_no_tree_produces(path: str, layout: Layout) -> None:
    with pytest.raises(ValueError):
        mailbox_path_components(path, layout)


@pytest.mark.parametrize(
    ("root", "candidate", "inside"),
    [
        ("/m", "/m", True),
        ("/m", "/m/a", True),
        ("/m", "/m/a/../b", True),
        ("/m/", "/m/a", True),
        ("/m", "/m/../x", False),
        ("/m", "/m2", False),
        ("/m", "/", False),
        ("/", "/anything", True),
        ("/m/a/..", "/m/b", True),
    ],
)
def test_is_within(root: str, candidate: str, inside: bool) -> None:
    assert is_within(PurePosixPath(root), PurePosixPath(candidate)) is inside


def test_is_within_refuses_relative_paths() -> None:
    with pytest.raises(ValueError, match="absolute"):
        is_within(PurePosixPath("m"), PurePosixPath("/m/a"))


# -- properties ---------------------------------------------------------------

# Names that stress the rules, mixed with arbitrary Unicode (no surrogates:
# JSON from a sane server has none, and they are refused anyway).
awkward_names = st.sampled_from(
    ["cur", "new", "tmp", "INBOX", "Inbox", ".", "..", "%", "%25", "a.b", "/", " ", "\x00"]
)
awkward_alphabet = st.text(alphabet=".%/curnewtmpINBOX \x00\t\x7f\x85é✈", min_size=1, max_size=6)
# 40 characters escape to at most 240 bytes (6 per C1 control): under NAME_MAX.
component_names = st.one_of(awkward_names, awkward_alphabet, st.text(min_size=1, max_size=40))
layouts = st.sampled_from(LAYOUTS)


@given(component_names, layouts, st.booleans())
def test_escaped_component_is_one_safe_reversible_path_component(
    name: str, layout: Layout, top_level: bool
) -> None:
    escaped = escape_component(name, layout, top_level=top_level)
    assert unescape_component(escaped) == name
    assert "/" not in escaped
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in escaped)
    assert not escaped.startswith(".")
    if layout == "verbatim":
        assert escaped not in {"cur", "new", "tmp"}
    else:
        assert "." not in escaped
    if top_level:
        assert escaped != "INBOX"
    joined = ROOT / escaped
    assert is_within(ROOT, joined)
    # Exactly one level below the root: not the root, not a grandchild.
    assert PurePosixPath(os.path.normpath(joined)).parent == ROOT


@given(st.text(min_size=1, max_size=400), layouts)
def test_escape_either_fits_name_max_or_refuses(name: str, layout: Layout) -> None:
    try:
        escaped = escape_component(name, layout, top_level=False)
    except UnsafeName:
        return
    assert len(escaped.encode()) <= NAME_MAX


# Short names and few levels keep a maildir++ ".A.B..." under NAME_MAX
# (8 levels x (5 characters x 6 bytes + 1 dot) = 248 bytes).
tree_names = st.one_of(awkward_names, awkward_alphabet.filter(lambda s: len(s) <= 5))


@st.composite
def mailbox_trees(draw: st.DrawFn) -> list[MailboxNode]:
    """Random forests; an optional inbox anywhere; duplicate siblings allowed."""
    size = draw(st.integers(min_value=1, max_value=8))
    inbox_at = draw(st.none() | st.integers(min_value=0, max_value=size - 1))
    nodes: list[MailboxNode] = []
    for i in range(size):
        parent = draw(st.none() | st.integers(min_value=0, max_value=i - 1)) if i else None
        nodes.append(
            MailboxNode(
                id=f"m{i}",
                name=draw(tree_names),
                parent_id=None if parent is None else f"m{parent}",
                role="inbox" if i == inbox_at else None,
            )
        )
    return nodes


def expected_names(node: MailboxNode, by_id: dict[str, MailboxNode]) -> list[str]:
    """The model: names from the top, the inbox standing in as "INBOX"."""
    names: list[str] = []
    current = node
    while current.role != "inbox":
        names.append(current.name)
        if current.parent_id is None:
            return names[::-1]
        current = by_id[current.parent_id]
    return ["INBOX", *names[::-1]]


@given(mailbox_trees(), layouts)
def test_folder_paths_is_injective_and_read_back_inverts_it(
    tree: list[MailboxNode], layout: Layout
) -> None:
    by_id = {node.id: node for node in tree}
    # Two mailboxes may share a folder only if they have the same names from
    # the top AND the same anchor (under the inbox or not).
    keys = [(_under_inbox(node, by_id), tuple(expected_names(node, by_id))) for node in tree]
    if len(set(keys)) < len(keys):
        with pytest.raises(UnsafeName, match="share"):
            folder_paths(tree, layout)
        return
    paths = folder_paths(tree, layout)
    assert len(set(paths.values())) == len(paths)
    for node in tree:
        path = paths[node.id]
        assert mailbox_path_components(path, layout) == expected_names(node, by_id)
        assert is_within(ROOT, ROOT / path)
        if layout == "verbatim":
            assert not {"", ".", "..", "cur", "new", "tmp"} & set(path.split("/"))
        else:
            assert "/" not in path
            assert len(path.encode()) <= NAME_MAX


def _under_inbox(node: MailboxNode, by_id: dict[str, MailboxNode]) -> bool:
    current: MailboxNode | None = node
    while current is not None:
        if current.role == "inbox":
            return True
        current = None if current.parent_id is None else by_id[current.parent_id]
    return False


@pytest.mark.parametrize(
    ("tree", "unsafe", "why"),
    [
        # a name that cannot be stored, and its child (whose path runs through it)
        ([box("ok", "Work"), box("bad", ""), box("kid", "Kid", "bad")], {"bad", "kid"}, "empty"),
        # two mailboxes that would share a folder: neither owns it
        ([box("ok", "Work"), box("a", "Same"), box("b", "Same")], {"a", "b"}, "shares"),
        ([box("ok", "Work"), box("a", "A", "gone")], {"a"}, "unknown parent"),
        ([box("ok", "Work"), box("a", "A", "b"), box("b", "B", "a")], {"a", "b"}, "cycle"),
        ([box("ok", "Work"), box("long", "é" * 130)], {"long"}, "longer than"),
    ],
)
def test_map_folders_leaves_out_only_what_cannot_be_a_folder(
    tree: list[MailboxNode], unsafe: set[str], why: str
) -> None:
    """One poison mailbox must not block the account: the rest is mapped as
    folder_paths maps it, each left-out mailbox says why."""
    paths, left_out = map_folders(tree, "verbatim")
    assert set(left_out) == unsafe
    assert all(why in reason for m, reason in left_out.items() if m != "kid")
    assert paths == {"ok": "Work"}
    good = [n for n in tree if n.id not in unsafe]
    assert paths == folder_paths(good, "verbatim")
