"""Property test (issue 14, item 6): generated hostile trees, dropped among good ones into
one real daemon. Links (inside, outside, dangling, loops), FIFOs, JSON nested too deeply in
every shape and place, huge key counts, odd names, unreadable entries, folders nested past
Python's recursion limit. Every drop must end with a status (failed with the error code its
kind of fault gets, or completed), every good drop must complete, no validation may crash
(`job.validation_crashed`, code `internal`), the user's files must be kept, nothing outside
the spool may be touched, and the daemon must stay up and healthy."""

import json
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Daemon, health, status, wait_for

# The error code of each category of failing drop; folder_named's comes from its inputs.
CODES = {"folder_bad_doc": "invalid_job", "folder_job_file": "invalid_job", "folder_own_name": "invalid_job",
         "top_bad": "invalid_job", "top_odd_file": "invalid_job", "folder_link": "invalid_job"}
GOOD = {"kind": "probe"}
# Names the daemon keeps for its own files in a job folder (a drop holding one fails).
DAEMON_NAMES = [".job.json", ".final.json", ".results", ".attempt-1", ".id-x"]
UNFINISHED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".swp", "~", ".cancel")


@dataclass
class Tree:
    """One drop: what is built, and what the daemon must make of it."""

    name: str  # its name in the inbox
    expect: str  # "completed" or "failed"
    build: callable  # build(inbox) creates it, complete at once (renamed in)
    code: str | None = None  # the error code when it fails


# -- names -------------------------------------------------------------------------------

odd_part = st.sampled_from([
    "", "-", "--", "-rf ", " ", "a b", "é", "日本語", "emoji-🦊", "new\nline", "tab\t", "quote'\"", "back\\slash",
    "x" * 200, "\u202eevil", "ﬁ", "CON", "%s%n", "$(id)", "*?[", "non-utf8-\udcff\udcfe",
])


def top_name(draw, n: int, ext: str = "") -> str:
    """A name at the top of the inbox: odd, unique (hNNN), never one the inbox ignores."""
    name = f"{draw(odd_part)[:40]}h{n:03d}{draw(odd_part)}{ext}"
    if name.startswith((".", "~")) or name.endswith(UNFINISHED_SUFFIXES):
        name = f"h{n:03d}{ext}"
    return name if len(os.fsencode(name)) <= 200 else f"h{n:03d}{'x' * 150}{ext}"


def entry_name(draw, i: int) -> str:
    """A name inside a folder drop (may start with '.', '-', hold spaces or newlines)."""
    return f"{draw(odd_part)}{draw(st.sampled_from(['', '.', '.hidden-']))}{i}"  # the digit keeps names unique


def utf8(name: str) -> bool:
    try:
        name.encode()
        return True
    except UnicodeEncodeError:
        return False


# -- JSON ------------------------------------------------------------------------------------

def deep(shape: str, depth: int) -> str:
    if shape == "arrays":
        return "[" * depth + "]" * depth
    if shape == "objects":
        return '{"a":' * depth + "1" + "}" * depth
    return '[{"a":' * (depth // 2) + "1" + "}]" * (depth // 2)  # mixed


BAD_HOWS = ["deep", "huge_keys", "deep", "wrong"]
DEEP_PLACES = ["top", "param", "labels", "inputs", "kind"]
DEEP_SHAPES = ["arrays", "objects", "mixed"]


@st.composite
def bad_document(draw, turn: int) -> bytes:
    """A job document that must fail: nested too deeply somewhere, huge, or wrong (`turn`
    picks the way)."""
    how = BAD_HOWS[turn % len(BAD_HOWS)]
    if how == "deep":
        text = deep(DEEP_SHAPES[turn // 4 % 3], draw(st.sampled_from([990, 1_100, 5_000, 100_000])))
        where = DEEP_PLACES[turn // 2 % len(DEEP_PLACES)]
        if where == "top":
            return text.encode()
        if where == "param":
            return f'{{"kind": "probe", "params": {{"seconds": {text}}}}}'.encode()
        if where == "labels":
            return f'{{"kind": "probe", "labels": {text}}}'.encode()
        if where == "inputs":
            return f'{{"kind": "probe", "inputs": {{"extra": {text}}}}}'.encode()
        return f'{{"kind": {text}}}'.encode()
    if how == "huge_keys":
        keys = {f"k{i}": i for i in range(draw(st.sampled_from([20_000, 60_000])))}
        place = ["params", "top", "inputs", "labels"][turn // 4 % 4]
        doc = {"kind": "probe", **keys} if place == "top" else {"kind": "probe", place: keys}
        return json.dumps(doc).encode()
    return draw(st.sampled_from([b"", b"{", b"\xff\xfe", b"null", b'"job"', b'{"kind": "probe", "priority": ' + b"9" * 5000 + b"}",
                                 b'{"kind": "probe", "labels": {"x": "\\udcff"}, "colour": 1}']))


# -- entries of a folder drop ------------------------------------------------------------

ENTRY_KINDS = ["file", "empty", "link_in", "link_out", "dangling", "loop", "self_loop", "fifo", "dir",
               "deep_dir", "long_dir", "unreadable", "unreadable_dir", "hardlink"]
# As a named input, these still let the job complete. chmod 000 does not stop root (the
# tests run as root) and the probe kind only stats its input, so "unreadable" is usable too.
USABLE = {"file", "link_in", "unreadable"}
# A named input of another kind fails the job with this code (unsupported_input if not here).
NAMED_CODES = {"link_out": "invalid_job", "dangling": "missing_input"}


def make_entry(folder: Path, kind: str, name: str, outside: Path) -> list[str]:
    """Creates one entry; returns the names it put in the folder."""
    path = folder / name
    if kind == "file":
        path.write_bytes(b"data " + name.encode("utf-8", "surrogateescape"))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "link_in":
        (folder / f"{name}.target").write_bytes(b"target")
        os.symlink(f"{name}.target", path)
        return [name, f"{name}.target"]
    elif kind == "link_out":
        os.symlink(outside, path)
    elif kind == "dangling":
        os.symlink(f"{name}.missing", path)
    elif kind == "loop":
        os.symlink(f"{name}.b", path)
        os.symlink(name, folder / f"{name}.b")
        return [name, f"{name}.b"]
    elif kind == "self_loop":
        os.symlink(name, path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
        (path / "inner.txt").write_text("inner")
    elif kind in ("deep_dir", "long_dir"):  # deeper than Python's recursion limit, or than PATH_MAX
        path.mkdir()
        fd = os.open(path, os.O_RDONLY)
        step, levels = ("d", 1_100) if kind == "deep_dir" else ("l" * 200, 30)
        for _ in range(levels):
            os.mkdir(step, dir_fd=fd)
            fd, old = os.open(step, os.O_RDONLY, dir_fd=fd), fd
            os.close(old)
        os.close(fd)
    elif kind == "unreadable":
        path.write_bytes(b"secret")
        os.chmod(path, 0)
    elif kind == "unreadable_dir":
        path.mkdir()
        (path / "inside.txt").write_text("x")
        os.chmod(path, 0)
    elif kind == "hardlink":
        path.write_bytes(b"twice")
        os.link(path, folder / f"{name}.twin")
        return [name, f"{name}.twin"]
    return [name]


JOB_FILE_KINDS = ["link_in", "link_out", "dangling", "self_loop", "fifo", "dir", "missing"]


def make_job_file(folder: Path, kind: str, raw: bytes, outside: Path) -> list[str]:
    path = folder / "job.json"
    if kind == "regular":
        path.write_bytes(raw)
    elif kind == "link_in":
        (folder / "real-job.json").write_bytes(raw)
        os.symlink("real-job.json", path)
        return ["job.json", "real-job.json"]
    elif kind == "link_out":
        os.symlink(outside, path)
    elif kind == "dangling":
        os.symlink("gone.json", path)
    elif kind == "self_loop":
        os.symlink("job.json", path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dir":
        path.mkdir()
    else:
        return []
    return ["job.json"]


@st.composite
def folder_tree(draw, n: int, turn: int, outside: Path, category: str) -> Tree:
    """A folder drop: job.json (good, bad, or not a regular file) with odd entries beside it,
    some of them named as the job's inputs."""
    name = top_name(draw, n)
    kinds = draw(st.lists(st.sampled_from(ENTRY_KINDS), max_size=4))
    if category == "folder_named":  # the named input's kind walks through all of them
        kinds = [ENTRY_KINDS[turn % len(ENTRY_KINDS)], *kinds]
    names = [entry_name(draw, i) for i in range(len(kinds))]
    if category == "folder_named" and not utf8(names[0]):
        names[0] = f"named{names[0].encode('utf-8', 'replace').decode()}"  # a JSON file can name only text
    doc = dict(GOOD)
    named = []
    if category == "folder_named":
        nameable = [i for i, nm in enumerate(names[1:], 1) if utf8(nm)]
        named = [0, *draw(st.lists(st.sampled_from(nameable), unique=True, max_size=2))] if nameable else [0]
        doc["inputs"] = {"data": names[named[0]]}
        if len(named) > 1:
            doc["inputs"]["extra"] = [names[i] for i in named[1:]]
    raw = draw(bad_document(turn)) if category == "folder_bad_doc" else json.dumps(doc).encode()
    job_kind = JOB_FILE_KINDS[turn % len(JOB_FILE_KINDS)] if category == "folder_job_file" else "regular"
    own_name = draw(st.sampled_from(DAEMON_NAMES)) if category == "folder_own_name" else None
    good = category in ("folder_good", "folder_named") and all(kinds[i] in USABLE for i in named)
    if category == "folder_named":  # the first named input that cannot be used (data, then extra)
        code = next((NAMED_CODES.get(kinds[i], "unsupported_input") for i in named if kinds[i] not in USABLE), None)
    else:
        code = CODES.get(category)

    def build(inbox: Path) -> list[str]:
        tmp = inbox / f".{name}.part"
        tmp.mkdir()
        made = make_job_file(tmp, job_kind, raw, outside)
        for kind, nm in zip(kinds, names):
            made += make_entry(tmp, kind, nm, outside)
        if own_name:
            (tmp / own_name).write_text("the user's own")
            made.append(f"dropped{own_name}")  # kept under a name that is not the daemon's
        os.rename(tmp, inbox / name)
        return made

    return Tree(name, "completed" if good else "failed", build, None if good else code)


@st.composite
def top_json_tree(draw, n: int, turn: int, outside: Path, category: str) -> Tree:
    """NAME.json at the top of the inbox: a file (good, with media, or bad), a link, a FIFO."""
    name = top_name(draw, n, ".json")
    what = {"top_good": ["good", "media"][turn % 2], "top_bad": "bad",
            "top_odd_file": ["link_out", "dangling", "self_loop", "fifo"][turn % 4]}[category]
    raw = draw(bad_document(turn)) if what == "bad" else json.dumps(GOOD).encode()
    media = f"h{n:03d}-media.bin"
    if what == "media":
        raw = json.dumps({"kind": "probe", "inputs": {"data": media}}).encode()

    def build(inbox: Path) -> list[str]:
        tmp = inbox / f".{name}.part"
        made = [name]
        if what == "media":
            (inbox / f".{media}.part").write_bytes(b"media")
            os.rename(inbox / f".{media}.part", inbox / media)
            made.append(media)
        if what in ("good", "media", "bad"):
            tmp.write_bytes(raw)
        elif what == "link_out":
            os.symlink(outside, tmp)
        elif what == "dangling":
            os.symlink(f"{name}.gone", tmp)
        elif what == "self_loop":
            os.symlink(name, tmp)  # still a loop once renamed to NAME
        else:
            os.mkfifo(tmp)
        os.rename(tmp, inbox / name)
        return made

    good = what in ("good", "media")
    return Tree(name, "completed" if good else "failed", build, None if good else CODES[category])


@st.composite
def folder_link_tree(draw, n: int, outside_dir: Path) -> Tree:
    name = top_name(draw, n)

    def build(inbox: Path) -> list[str]:
        os.symlink(outside_dir, inbox / f".{name}.part")
        os.rename(inbox / f".{name}.part", inbox / name)
        return [name]

    return Tree(name, "failed", build, CODES["folder_link"])


CATEGORIES = ["folder_good", "folder_named", "folder_bad_doc", "folder_job_file", "folder_own_name",
              "top_good", "top_bad", "top_odd_file", "folder_link"]


@st.composite
def hostile_tree(draw, n: int, outside: Path, outside_dir: Path) -> Tree:
    """`n` only names the drop. The category and the ways within it come from one drawn seed
    (hypothesis favours the first entry of each sampled list; a seeded shuffle favours none)."""
    turn = random.Random(draw(st.integers(min_value=0, max_value=2**31 - 1))).getrandbits(32)
    category, turn = CATEGORIES[turn % len(CATEGORIES)], turn // len(CATEGORIES)
    if category.startswith("top_"):
        return draw(top_json_tree(n, turn, outside, category))
    if category == "folder_link":
        return draw(folder_link_tree(n, outside_dir))
    return draw(folder_tree(n, turn, outside, category))


# -- the test ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def property_daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-property") / "spool"
    d = Daemon(root, workers=["cpu", "cpu"]).start()
    yield d
    d.stop()
    # Folders nested 1,100 deep and chmod 000: rm copes, shutil.rmtree would recurse too deep.
    subprocess.run(["chmod", "-R", "u+rwx", str(root)], check=False)
    subprocess.run(["rm", "-rf", str(root)], check=False)


def printable(name: str) -> str:
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _statuses_by_drop(root: Path, trees: dict[str, Tree]) -> dict[str, dict]:
    """Drop name → its final status (found through status.drop: odd names become other ids)."""
    wanted = {f"inbox/{printable(name)}": name for name in trees}
    found: dict[str, dict] = {}

    def all_found() -> bool:
        for job_id in os.listdir(root / "outbox"):
            doc = status(root, job_id)
            if doc and doc.get("drop") in wanted and doc["state"] in ("completed", "failed", "canceled"):
                found[wanted[doc["drop"]]] = doc
        return len(found) == len(wanted)

    try:
        wait_for(all_found, timeout=90, what="a final status for every drop")
    except AssertionError:
        missing = sorted(set(trees) - set(found))
        raise AssertionError(f"{len(missing)} drops without a final status: {[ascii(m) for m in missing[:5]]}") from None
    return found


def test_hostile_trees_among_good_drops(property_daemon, tmp_path_factory):
    d = property_daemon
    inbox = d.root / "inbox"
    outside_dir = tmp_path_factory.mktemp("outside")
    outside = outside_dir / "secret.json"
    outside.write_text(json.dumps(GOOD))
    before = sorted(os.listdir(outside_dir))
    preset_inboxes = sorted(os.listdir(inbox))
    trees: dict[str, Tree] = {}
    made: dict[str, list[str]] = {}

    @settings(max_examples=300, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def drop(data):
        n = len(trees)
        tree = data.draw(hostile_tree(n, outside, outside_dir))
        made[tree.name] = tree.build(inbox)
        trees[tree.name] = tree
        if n % 4 == 0:  # and a plain good drop next to the hostile ones
            good = f"good{n:03d}.json"
            (inbox / f".{good}.part").write_text(json.dumps(GOOD))
            os.rename(inbox / f".{good}.part", inbox / good)
            made[good] = [good]
            trees[good] = Tree(good, "completed", None)

    drop()
    assert sum(t.expect == "completed" for t in trees.values()) >= 20
    assert sum(t.expect == "failed" for t in trees.values()) >= 20
    docs = _statuses_by_drop(d.root, trees)

    wrong = []
    for name, tree in trees.items():
        doc = docs[name]
        if doc["state"] != tree.expect:
            wrong.append((ascii(name), tree.expect, doc["state"], doc.get("error")))
        elif doc["state"] == "failed" and not (doc["error"]["code"] == tree.code and doc["error"]["message"]):
            wrong.append((ascii(name), f"code {tree.code} and a message", doc.get("error")))
        kept = d.root / "outbox" / doc["id"] / "input"
        lost = [ascii(m) for m in made[name] if not os.path.lexists(kept / m)]
        if lost:
            wrong.append((ascii(name), "files not kept in input/", lost))
    assert not wrong, wrong
    assert d.proc.poll() is None, d.log()
    assert health(d.api) == (200, {"status": "ok"})
    assert not [e for e in d.log_events() if e.get("event") in ("daemon.tick_failed", "intake.accept_failed",
                                                                 "job.validation_crashed")]
    assert sorted(os.listdir(outside_dir)) == before and outside.read_text() == json.dumps(GOOD)
    assert sorted(os.listdir(inbox)) == preset_inboxes  # every drop was taken, none left behind
