"""The kernel offsets' disk cache: one parse per kernel, and nothing trusted that another user
could have written or shaped."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from attrs import frozen

from kstat.sources import offsets_cache


@frozen
class Offsets:
    where: int
    flag: bool
    maybe: int | None


PARSED = Offsets(where=40, flag=True, maybe=None)
# Where a file keeps them: under the class's name and fields.
SECTION = offsets_cache.section_name(Offsets)


class Parser:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, btf: Path) -> Offsets:
        self.calls += 1
        return PARSED


@pytest.fixture
def btf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KSTAT_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x9f\xeb a kernel's BTF")
    return path


def _only_file(tmp_path: Path) -> Path:
    """The offsets file (beside it, this boot's note of the BTF's digest)."""
    (found,) = (path for path in (tmp_path / "cache").iterdir() if not path.name.startswith("boot-"))
    return found


def test_parsed_once_per_kernel_then_read(btf: Path, tmp_path: Path) -> None:
    parse = Parser()
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED
    assert parse.calls == 1
    assert offsets_cache.cached(Offsets, btf)
    written = _only_file(tmp_path)
    assert stat.S_IMODE(written.stat().st_mode) & 0o022 == 0
    # Another kernel (other BTF bytes) has a file of its own.
    btf.write_bytes(b"\x9f\xeb another kernel")
    assert not offsets_cache.cached(Offsets, btf)
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED
    assert parse.calls == 2
    assert len([path for path in (tmp_path / "cache").iterdir() if not path.name.startswith("boot-")]) == 2


def _a_later_process() -> None:
    """What another kstat of the same boot starts with: no digest worked out yet."""
    offsets_cache._digests.clear()


def test_a_later_start_of_the_same_boot_takes_the_digest_from_the_note(
    btf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offsets_cache.offsets(Offsets, Parser(), btf)
    _a_later_process()
    # No BTF read (hence no hash) at all: the note says which file is this kernel's.
    real_open = open

    def no_btf(file: object, *args: object, **kwargs: object) -> object:
        assert file != str(btf), "the BTF was read again"
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", no_btf)
    assert offsets_cache.cached(Offsets, btf)


def test_a_note_others_could_write_is_not_believed(btf: Path, tmp_path: Path) -> None:
    offsets_cache.offsets(Offsets, Parser(), btf)
    (note,) = (tmp_path / "cache").glob("boot-*.json")
    # Pointing this kernel at another kernel's file: refused, the BTF hashed again.
    noted = json.loads(note.read_text())
    (key,) = (name for name in noted if name != "version")
    note.write_text(json.dumps({**noted, key: "0" * 32}))
    os.chmod(note, 0o666)
    _a_later_process()
    assert offsets_cache.cached(Offsets, btf)
    os.chmod(note, 0o644)
    _a_later_process()
    assert not offsets_cache.cached(Offsets, btf)  # believed: it names a file that is not there


def test_a_file_others_could_write_is_not_trusted(btf: Path, tmp_path: Path) -> None:
    parse = Parser()
    offsets_cache.offsets(Offsets, parse, btf)
    written = _only_file(tmp_path)
    written.write_text(json.dumps({"version": 1, SECTION: {"where": 4096, "flag": True, "maybe": 7}}))
    written.chmod(0o666)
    assert not offsets_cache.cached(Offsets, btf)
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED  # parsed again, and replaced
    assert parse.calls == 2
    assert stat.S_IMODE(written.stat().st_mode) & 0o022 == 0
    assert offsets_cache.cached(Offsets, btf)
    (tmp_path / "cache").chmod(0o777)
    assert not offsets_cache.cached(Offsets, btf)


def test_a_link_is_not_followed(btf: Path, tmp_path: Path) -> None:
    parse = Parser()
    offsets_cache.offsets(Offsets, parse, btf)
    written = _only_file(tmp_path)
    planted = tmp_path / "planted.json"
    planted.write_text(json.dumps({"version": 1, SECTION: {"where": 4096, "flag": False, "maybe": 1}}))
    written.unlink()
    written.symlink_to(planted)
    assert not offsets_cache.cached(Offsets, btf)
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED
    # The rename replaced the link itself; the file it pointed to is untouched.
    assert not written.is_symlink() and json.loads(planted.read_text())[SECTION]["where"] == 4096


@pytest.mark.parametrize(
    "section",
    [
        {"where": 40, "flag": True},  # a field missing
        {"where": 40, "flag": True, "maybe": None, "extra": 1},
        {"where": "40", "flag": True, "maybe": None},
        {"where": -8, "flag": True, "maybe": None},
        {"where": 2**40, "flag": True, "maybe": None},
        {"where": True, "flag": True, "maybe": None},
        {"where": 40, "flag": 1, "maybe": None},
        {"where": 40.0, "flag": True, "maybe": None},
        [40, True, None],
    ],
)
def test_anything_out_of_shape_is_parsed_again(btf: Path, tmp_path: Path, section: object) -> None:
    parse = Parser()
    offsets_cache.offsets(Offsets, parse, btf)
    _only_file(tmp_path).write_text(json.dumps({"version": 1, SECTION: section}))
    assert not offsets_cache.cached(Offsets, btf)
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED
    assert parse.calls == 2


@frozen
class _OffsetsOfAnotherVersion:
    """The same class in another kstat version: the same name, a field more."""

    where: int
    flag: bool
    maybe: int | None
    more: int


_OffsetsOfAnotherVersion.__name__ = "Offsets"


def test_two_versions_of_an_offsets_class_keep_each_their_own(btf: Path) -> None:
    """Another kstat on the host whose class has a field more (an older one, a newer one: the
    bench runs two trees in turn) neither replaces these nor is replaced: once each has parsed,
    neither parses again."""
    theirs = _OffsetsOfAnotherVersion(where=40, flag=True, maybe=None, more=1)
    ours, other = Parser(), Parser()

    def parse_theirs(path: Path) -> _OffsetsOfAnotherVersion:
        other(path)
        return theirs

    for _ in range(3):
        assert offsets_cache.offsets(Offsets, ours, btf) == PARSED
        assert offsets_cache.offsets(_OffsetsOfAnotherVersion, parse_theirs, btf) == theirs
    assert (ours.calls, other.calls) == (1, 1)
    assert offsets_cache.section_name(_OffsetsOfAnotherVersion) != SECTION


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"\xff\xfe",
        b"[]",
        b'{"version": 0, "Offsets": {}}',
        b"9" * 70_000,
        b'{"version": 1} {"version": 1}',
        b'{"version": 1} x',
        b'{"version": NaN}',
        b"[" * 60_000,
    ],
)
def test_a_damaged_file_is_parsed_again(btf: Path, tmp_path: Path, content: bytes) -> None:
    parse = Parser()
    offsets_cache.offsets(Offsets, parse, btf)
    _only_file(tmp_path).write_bytes(content)
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED
    assert parse.calls == 2


def test_a_cache_that_cannot_be_written_costs_only_the_parse(
    btf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("KSTAT_CACHE_DIR", str(blocked / "cache"))
    parse = Parser()
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED
    assert offsets_cache.offsets(Offsets, parse, btf) == PARSED
    assert parse.calls == 2


def test_no_btf_is_the_parsers_to_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KSTAT_CACHE_DIR", str(tmp_path / "cache"))

    def parse(btf: Path) -> Offsets:
        raise FileNotFoundError(btf)

    with pytest.raises(FileNotFoundError):
        offsets_cache.offsets(Offsets, parse, tmp_path / "missing")
    assert not offsets_cache.cached(Offsets, tmp_path / "missing")
    assert not os.path.exists(tmp_path / "cache")
