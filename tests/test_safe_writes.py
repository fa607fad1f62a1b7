"""Files root kstat writes, with a real unprivileged user (nobody, a forked child that dropped
root) racing it in a directory both can write: the temporary file swapped for a symbolic link
the moment it appears (inotify), links planted where kstat writes (to a root-only file, to a
block device, to a directory), a hard link, FIFOs, and every umask. Each with the kernel's own
protection (fs.protected_symlinks) off and on. Root never writes or chmods anything but its
own files, and says so in one line when it will not write."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pwd
import re
import select
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kstat._atomic import open_for_append, write_atomically, write_fallback
from kstat.errors import OutputError
from tests.kstat_process import KstatProcess, run_kstat

pytestmark = pytest.mark.root

NOBODY = pwd.getpwnam("nobody")
SECRET = b"root's own, 0600\n"
GOLDEN = Path(__file__).parent / "golden"
_IN_CREATE, _IN_MOVED_TO = 0x100, 0x80
_EVENT = struct.Struct("iIII")


@pytest.fixture(params=[0, 1], ids=["protected_symlinks=0", "protected_symlinks=1"])
def protected_symlinks(request: pytest.FixtureRequest) -> Iterator[int]:
    """fs.protected_symlinks set for the test, and put back after."""
    sysctl = Path("/proc/sys/fs/protected_symlinks")
    before = sysctl.read_text()
    sysctl.write_text(f"{request.param}\n")
    try:
        yield request.param
    finally:
        sysctl.write_text(before)


def shared(mode: int) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="kstat-t-shared-", dir="/tmp"))
    directory.chmod(mode)  # mkdtemp's 0700 would keep nobody out
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.fixture
def world_writable() -> Iterator[Path]:
    """A directory anyone may write to, without the sticky bit: anyone may rename or remove
    anyone's files in it (a careless `chmod 777`)."""
    yield from shared(0o777)


@pytest.fixture
def sticky() -> Iterator[Path]:
    """A directory like /tmp: anyone may add files; only their owner may remove them."""
    yield from shared(0o1777)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file only root may read, which no one must be able to get kstat to write or chmod."""
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def assert_untouched(secret: Path) -> None:
    assert secret.read_bytes() == SECRET
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


def plant_link(target: Path | str, at: Path) -> None:
    """A symbolic link as nobody would have made it."""
    os.symlink(target, at)
    os.lchown(at, NOBODY.pw_uid, NOBODY.pw_gid)


@contextlib.contextmanager
def as_nobody(work: Callable[[int], None]) -> Iterator[Callable[[], int]]:
    """`work(report_fd)` in a child that has become nobody, until the block ends; it writes a
    byte to `report_fd` once ready and then one for each success. Gives a function counting
    the successes so far."""
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(ready_read)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            work(ready_write)
        finally:
            os._exit(0)
    os.close(ready_write)
    readable, _, _ = select.select([ready_read], [], [], 10)
    assert readable and os.read(ready_read, 1) == b"r", "nobody never got ready"
    os.set_blocking(ready_read, False)
    successes = 0

    def count() -> int:
        nonlocal successes
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(ready_read, 65536):
                successes += len(chunk)
        return successes

    try:
        yield count
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_read)


def swap_temporaries(directory: Path, link_to: Path) -> Callable[[int], None]:
    """The inotify race: each temporary file kstat makes in `directory` is replaced by a link
    to `link_to` the moment it is created."""
    temporary = re.compile(rb"^\..*\.tmp$")

    def work(report_fd: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        watch = libc.inotify_init1(0)
        assert libc.inotify_add_watch(watch, bytes(directory), _IN_CREATE | _IN_MOVED_TO) >= 0
        os.write(report_fd, b"r")
        swapped: set[bytes] = set()
        while True:
            data = os.read(watch, 65536)
            offset = 0
            while offset < len(data):
                _, _, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
                offset += _EVENT.size + length
                if temporary.match(name) and name not in swapped:
                    swapped.add(name)  # its own link's creation comes back as an event too
                    path = bytes(directory) + b"/" + name
                    try:
                        os.unlink(path)
                        os.symlink(bytes(link_to), path)
                        os.write(report_fd, b"s")
                    except OSError:
                        pass

    return work


# --- the race on the temporary file ------------------------------------------------------------


def test_nobody_swapping_the_temporary_file_gets_root_to_write_or_chmod_nothing(
    protected_symlinks: int, world_writable: Path, secret: Path
) -> None:
    report = world_writable / "r.json"
    data = b'{"report": "' + b"x" * 65536 + b'"}\n'
    refused = 0
    with as_nobody(swap_temporaries(world_writable, secret)) as swaps:
        for _ in range(200):
            try:
                write_atomically(report, data)
            except OutputError as error:
                assert "replaced by someone else" in str(error)
                refused += 1
                continue
            written = report.lstat()
            assert stat.S_ISREG(written.st_mode) and written.st_uid == 0
            assert report.read_bytes() == data
            assert stat.S_IMODE(written.st_mode) == 0o644
        won = swaps()
    assert_untouched(secret)
    # nobody did swap, and each swap was caught (give or take the one in flight as it ended)
    assert won > 0 and won - 1 <= refused <= won + 1


@pytest.mark.kernel
def test_root_kstat_racing_nobody_writes_its_report_or_keeps_it_privately(
    protected_symlinks: int, world_writable: Path, secret: Path
) -> None:
    report = world_writable / "r.json"
    with as_nobody(swap_temporaries(world_writable, secret)) as swaps:
        # Three runs at least, more until nobody has won a swap (a busy machine can let kstat's
        # rename come first).
        for attempt in range(8):
            if attempt >= 3 and swaps() > 0:
                break
            completed = run_kstat(["-duration", "200ms", "-o", str(report)])
            if completed.returncode == 0:
                assert stat.S_ISREG(report.lstat().st_mode) and report.lstat().st_uid == 0
                assert json.loads(report.read_text())["program_stats"] is not None
                continue
            (error,) = [line for line in completed.stderr.splitlines() if not line.startswith("{")]
            assert "replaced by someone else" in error, error
            fallback = Path(error.rsplit("the report was written to ", 1)[1].removesuffix(" instead"))
            assert stat.S_IMODE(fallback.parent.stat().st_mode) == 0o700
            assert json.loads(fallback.read_text())["program_stats"] is not None
            shutil.rmtree(fallback.parent)
        assert swaps() > 0
    assert_untouched(secret)


# --- links and devices planted where kstat writes ----------------------------------------------


@pytest.fixture
def block_device(tmp_path: Path) -> Iterator[Path]:
    """A loop device over a small file of zeros: a disk that nothing must be written onto."""
    backing = tmp_path / "disk"
    backing.write_bytes(bytes(65536))
    device = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        yield Path(device)
    finally:
        subprocess.run(["losetup", "--detach", device], check=False)
        assert backing.read_bytes() == bytes(65536), "something was written onto the disk"


def one_error(stderr: str) -> str:
    (line,) = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert "Traceback" not in stderr
    return line


@pytest.mark.kernel
def test_a_planted_link_at_the_report_or_the_stream_is_not_followed(
    protected_symlinks: int, sticky: Path, secret: Path, block_device: Path
) -> None:
    plant_link(block_device, sticky / "r.json")
    plant_link(secret, sticky / "s.ndjson")
    for arguments, named in (
        (["-o", str(sticky / "r.json")], "r.json"),
        (["--sink", f"ndjson:{sticky / 's.ndjson'}"], "s.ndjson"),
    ):
        completed = run_kstat(["-duration", "1h", *arguments])
        assert completed.returncode == 1
        assert one_error(completed.stderr).endswith(
            f"cannot write {sticky / named}: it is a symbolic link owned by uid {NOBODY.pw_uid}, "
            "neither kstat's user nor root: not followed (name the file itself)"
        )
        assert "window started" not in completed.stderr
    assert_untouched(secret)


def test_plot_and_history_follow_no_planted_link(protected_symlinks: int, sticky: Path, secret: Path) -> None:
    golden = sorted(GOLDEN.glob("*.json"))[0]
    plant_link(secret, sticky / "h.png")
    plant_link(secret, sticky / "p.png")
    plant_link("/etc", sticky / "charts")
    for arguments, named in (
        (["history", str(golden), "-o", str(sticky / "h.png")], "cannot write " + str(sticky / "h.png")),
        (["plot", str(golden), "-o", str(sticky / "p.png")], "cannot write " + str(sticky / "p.png")),
        (["plot", str(golden), "-o", str(sticky / "charts")], "cannot write into " + str(sticky / "charts")),
    ):
        completed = run_kstat(arguments)
        assert completed.returncode == 1, completed.stderr
        assert f"{named}: it is a symbolic link owned by uid {NOBODY.pw_uid}" in one_error(completed.stderr)
    assert_untouched(secret)
    assert not list(Path("/etc").glob("overview.png"))


def test_appends_refuse_disks_hard_links_and_fifos_without_a_reader(
    sticky: Path, secret: Path, block_device: Path
) -> None:
    os.link(secret, sticky / "hard.ndjson")  # as protected_hardlinks=0 would let nobody do
    os.mkfifo(sticky / "fifo.ndjson")
    for path, problem in (
        (block_device, "it is a block device; kstat writes files, FIFOs and terminals only"),
        (sticky / "hard.ndjson", "it has 1 other hard link(s): appending would write another file"),
        (sticky / "fifo.ndjson", "it is a FIFO that no one is reading"),
        (Path("/dev/kmsg"), "it is a character device; kstat writes files, FIFOs and terminals only"),
    ):
        with pytest.raises(OutputError) as refused:
            open_for_append(path)
        assert str(refused.value) == f"cannot write {path}: {problem}"
    assert_untouched(secret)
    with open_for_append(Path("/dev/null")) as null:  # the harmless devices still work
        null.write(b"x\n")


@pytest.mark.kernel
def test_a_rotation_replaced_by_a_link_is_not_reopened_through_it(
    protected_symlinks: int, world_writable: Path, secret: Path
) -> None:
    stream = world_writable / "s.ndjson"
    kstat = KstatProcess(["serve", "--interval", "100ms", "--sink", f"ndjson:{stream}"])
    kstat.wait_for_window()
    deadline = time.monotonic() + 30
    while stream.stat().st_size == 0:  # rotated once it holds lines, as a live log is
        assert time.monotonic() < deadline, "no line was written"
        time.sleep(0.05)

    def rotate_and_plant(report_fd: int) -> None:
        # nobody may rename root's file in a directory without the sticky bit
        os.rename(stream, world_writable / "s.ndjson.1")
        os.symlink(secret, stream)
        os.write(report_fd, b"r")

    with as_nobody(rotate_and_plant):
        kstat.signal(signal.SIGHUP)
        kstat.wait_for_event("sink failed", timeout_s=10)
    kstat.signal(signal.SIGTERM)
    returncode, _ = kstat.finish()
    assert returncode == 1
    assert f"cannot reopen {stream}: it is a symbolic link owned by uid {NOBODY.pw_uid}" in "".join(
        kstat.errors()
    )
    assert_untouched(secret)
    assert (world_writable / "s.ndjson.1").stat().st_size > 0


# --- modes, whatever the umask -------------------------------------------------------------------


@pytest.mark.kernel
def test_under_umask_000_files_are_0644_at_most_and_the_fallback_0600(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    kstat = KstatProcess(
        [
            "-duration",
            "300ms",
            "-o",
            str(fifo),
            "--sink",
            f"json:{tmp_path / 'r.json'}",
            "--sink",
            f"ndjson:{tmp_path / 's.ndjson'}",
        ],
        prefix=["bash", "-c", 'umask 000 && exec "$@"', "umask"],
        env={"TMPDIR": str(tmp_path)},
    )
    kstat.wait_for_event("waiting for a reader of the FIFO")
    kstat.signal(signal.SIGTERM)
    assert kstat.finish(timeout_s=10)[0] == 1
    (fallback,) = tmp_path.glob("kstat-report-*/report-*.json")
    modes = {
        path.name: stat.S_IMODE(path.stat().st_mode)
        for path in (tmp_path / "r.json", tmp_path / "s.ndjson", fallback, fallback.parent)
    }
    assert modes == {"r.json": 0o644, "s.ndjson": 0o644, fallback.name: 0o600, fallback.parent.name: 0o700}


def test_the_fallback_is_a_new_private_file_wherever_the_temporary_directory_is(sticky: Path) -> None:
    previous = tempfile.tempdir
    tempfile.tempdir = str(sticky)
    try:
        first, second = write_fallback(b"{}\n", "report"), write_fallback(b"{}\n", "report")
    finally:
        tempfile.tempdir = previous
    assert first.parent != second.parent  # a directory of its own each time: no guessable name
    for path in (first, second):
        assert path.parent.parent == sticky and path.read_bytes() == b"{}\n"
        assert (stat.S_IMODE(path.parent.stat().st_mode), stat.S_IMODE(path.stat().st_mode)) == (0o700, 0o600)
