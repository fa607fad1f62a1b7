"""One kernel booted under qemu, running one command as root on this machine's filesystem.

The guest sees the host's root read-only over 9p, under a tmpfs overlay it may write to. What
Python reads most (its install, the venv, the tree) comes from read-only ext4 images instead
(9p under emulation makes an import three times slower), each laid over its 9p original so
that anything left out of an image is still there. The kernel's own modules are a 9p share at
/lib/modules/RELEASE, so the guest loads what a test needs (veth, the clsact qdisc) the usual
way. A second share, writable, carries the command and its results. The initramfs is busybox
and the modules needed to mount all that, in dependency order.
"""

from __future__ import annotations

import errno
import fcntl
import gzip
import lzma
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from attrs import frozen

from tests.kernels.images import KernelImage

BUSYBOX: Final = Path("/bin/busybox")
RESULTS_IN_GUEST: Final = "/kstat-results"
# What the initramfs needs to reach its filesystems; the rest loads on demand from the share.
BOOT_MODULES: Final = (
    "virtio_pci",
    "virtio_blk",
    "virtio_rng",
    "9pnet_virtio",
    "9p",
    "overlay",
    # ext4 asks the crypto API for crc32c at every mount; loaded first, it needs no modprobe.
    "crc32c_generic",
    "ext4",
)
_MODULE_SUFFIXES: Final = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")
_KVM_GET_API_VERSION: Final = 0xAE00


@frozen
class Layer:
    """A directory of the host the guest reads from an ext4 image (`device`), laid over its 9p
    original; `writable` adds a tmpfs layer on top (the tree, where tests write)."""

    path: Path
    image: Path
    writable: bool = False


@frozen
class Outcome:
    """How a boot ended: the command's exit status (None if it never wrote one), the seconds
    it took, the accelerator, and where the console's log is."""

    exit_status: int | None
    seconds: float
    accelerator: str
    console_log: Path
    timed_out: bool


def kvm_usable() -> bool:
    """Whether qemu can use KVM here: /dev/kvm answers and the CPU virtualises (a nested
    hypervisor may offer /dev/kvm without VMX or SVM, and a stock kernel then fails to boot)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, _KVM_GET_API_VERSION) != 12:
            return False
    except OSError:
        return False
    finally:
        os.close(fd)
    flags = Path("/proc/cpuinfo").read_text()
    return " vmx" in flags or " svm" in flags


def _module_name(relative: str) -> str:
    name = relative.rsplit("/", 1)[-1]
    for suffix in _MODULE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.replace("-", "_")


def boot_modules(modules: Path, wanted: Sequence[str] = BOOT_MODULES) -> list[Path]:
    """The module files to load for `wanted`, dependencies first, built-in ones left out."""
    dependencies: dict[str, tuple[str, list[str]]] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        dependencies[_module_name(path)] = (path, [_module_name(need) for need in needs.split()])
    builtin = {_module_name(line) for line in (modules / "modules.builtin").read_text().split()}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        if name not in dependencies:
            return  # not built for this kernel (virtio_rng on some): boots without it
        path, needs = dependencies[name]
        for need in needs:
            visit(need)
        order.append(modules / path)

    for name in wanted:
        visit(name)
    return order


def _decompressed(module: Path) -> bytes:
    data = module.read_bytes()
    if module.name.endswith(".xz"):
        return lzma.decompress(data)
    if module.name.endswith(".gz"):
        return gzip.decompress(data)
    if module.name.endswith(".zst"):
        return subprocess.run(["zstd", "-dc", str(module)], check=True, capture_output=True).stdout
    return data


class _Cpio:
    """An initramfs in the cpio `newc` format the kernel unpacks."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self._inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self._inode += 1
        header = b"070701" + b"".join(b"%08x" % value for value in fields)
        self._parts.append(_padded(header + encoded))
        self._parts.append(_padded(data))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def _init_script(image: KernelImage, layers: Sequence[Layer], modules: Sequence[str]) -> str:
    """/init: mount everything, run the command in the chroot, write its status, power off."""
    mounts = []
    for index, layer in enumerate(layers):
        device, lower, target = f"/dev/vd{chr(ord('a') + index)}", f"/images/{index}", f"/newroot{layer.path}"
        mounts += [
            f"mkdir -p {lower} {target}",
            f"mount -t ext4 -o ro {device} {lower}",
        ]
        layers_below = f"{lower}:/host{layer.path}"
        if layer.writable:
            upper, work = f"/upper/layer{index}", f"/upper/work{index}"
            options = f"lowerdir={layers_below},upperdir={upper},workdir={work}"
            mounts += [f"mkdir -p {upper} {work}", f"mount -t overlay -o {options} overlay {target}"]
        else:
            mounts.append(f"mount -t overlay -o ro,lowerdir={layers_below} overlay {target}")
    nine_p = "trans=virtio,version=9p2000.L,msize=262144"
    return "\n".join(
        [
            "#!/bin/busybox sh",
            "/bin/busybox --install -s /bin",
            "export PATH=/bin",
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            "mount -t devtmpfs devtmpfs /dev",
            "exec </dev/console >/dev/console 2>&1",
            *[f"insmod /modules/{name} || echo 'kstat-vm: cannot load {name}'" for name in modules],
            "mkdir -p /host /upper /newroot",
            f"mount -t 9p -o ro,cache=loose,{nine_p} hostroot /host",
            "mount -t tmpfs -o size=75% tmpfs /upper",
            "mkdir -p /upper/root /upper/work",
            "mount -t overlay -o lowerdir=/host,upperdir=/upper/root,workdir=/upper/work overlay /newroot",
            *mounts,
            f"mkdir -p /newroot/lib/modules/{image.release} /newroot{RESULTS_IN_GUEST}",
            f"mount -t 9p -o ro,cache=loose,{nine_p} modules /newroot/lib/modules/{image.release}",
            f"mount -t 9p -o {nine_p} results /newroot{RESULTS_IN_GUEST}",
            "mount -t proc proc /newroot/proc",
            "mount -t sysfs sysfs /newroot/sys",
            "mount -t devtmpfs devtmpfs /newroot/dev",
            "mkdir -p /newroot/dev/pts /newroot/dev/shm",
            "mount -t devpts devpts /newroot/dev/pts",
            "mount -t tmpfs tmpfs /newroot/dev/shm",
            "mount -t tmpfs tmpfs /newroot/tmp",
            "mount -t tmpfs tmpfs /newroot/run",
            "mount -t bpf bpf /newroot/sys/fs/bpf",
            "mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup",
            "mount -t tracefs tracefs /newroot/sys/kernel/tracing 2>/dev/null",
            "mount -t debugfs debugfs /newroot/sys/kernel/debug 2>/dev/null",
            # The kernel's module requests run in pid 1's root, this initramfs: sent to the guest's.
            "echo /bin/kstat-modprobe > /proc/sys/kernel/modprobe",
            "ip link set lo up",
            "hostname kstat-vm",
            "echo kstat-vm: running",
            f"chroot /newroot /bin/sh {RESULTS_IN_GUEST}/command.sh",
            f"echo $? > /newroot{RESULTS_IN_GUEST}/exit-status",
            "sync",
            "poweroff -f",
            "",
        ]
    )


def build_initramfs(image: KernelImage, layers: Sequence[Layer], target: Path) -> None:
    archive = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "modules", "images"):
        archive.directory(directory)
    archive.device("dev/console", 5, 1)
    archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    modprobe = b'#!/bin/sh\nexec /bin/busybox chroot /newroot /sbin/modprobe "$@"\n'
    archive.file("bin/kstat-modprobe", modprobe, 0o755)
    names = []
    for index, module in enumerate(boot_modules(image.modules)):
        name = f"{index:02d}-{_module_name(module.name)}.ko"
        archive.file(f"modules/{name}", _decompressed(module))
        names.append(name)
    archive.file("init", _init_script(image, layers, names).encode(), 0o755)
    target.write_bytes(archive.bytes())


def _staged_files(source: Path, excluded: Sequence[str]) -> Iterator[tuple[Path, Path]]:
    """(file, its path relative to source) for every file and link under source, skipping the
    relative paths in `excluded` and caches of tools the guest does not run."""
    for directory, subdirectories, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        subdirectories[:] = [
            name
            for name in subdirectories
            if str(relative / name) not in excluded and name not in (".mypy_cache", ".ruff_cache")
        ]
        for name in files:
            if str(relative / name) not in excluded:
                yield Path(directory) / name, relative / name


def build_ext4_image(source: Path, target: Path, excluded: Sequence[str] = ()) -> None:
    """A read-only ext4 image of `source`, less `excluded`: staged by hard links (a copy where
    they cannot be made), then written by `mke2fs -d`."""
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    blocks = files = 0
    try:
        for path, relative in _staged_files(source, excluded):
            placed = staging / relative
            placed.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                placed.symlink_to(os.readlink(path))
            else:
                try:
                    os.link(path, placed)
                except OSError as error:
                    if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    shutil.copy2(path, placed)
                blocks += -(-path.stat().st_size // 4096)
            files += 1
        size_mib = (blocks * 4096 * 11 // 10 + files * 512) // (1 << 20) + 64
        subprocess.run(
            [
                "mke2fs",
                "-q",
                "-F",
                "-t",
                "ext4",
                # What a 5.10 kernel reads without asking for a checksum module.
                "-O",
                "^has_journal,^metadata_csum,^orphan_file",
                "-N",
                str(files * 6 // 5 + 1024),
                "-m",
                "0",
                "-d",
                str(staging),
                str(target),
                f"{size_mib}M",
            ],
            check=True,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def boot(
    image: KernelImage,
    layers: Sequence[Layer],
    command: str,
    work: Path,
    *,
    timeout_s: float,
    accelerator: str,
    cpus: int = 2,
    memory: str = "2G",
) -> Outcome:
    """Boots `image`, runs `command` (a shell line, in the guest's root) and powers off."""
    results = work / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "command.sh").write_text(command + "\n")
    initramfs = work / "initramfs.cpio"
    build_initramfs(image, layers, initramfs)
    console = work / "console.log"
    shares = [("hostroot", Path("/"), True), ("modules", image.modules, True), ("results", results, False)]
    arguments = [
        "qemu-system-x86_64",
        "-accel",
        "kvm" if accelerator == "kvm" else "tcg,thread=multi",
        "-cpu",
        "host" if accelerator == "kvm" else "max",
        "-m",
        memory,
        "-smp",
        str(cpus),
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
        "-kernel",
        str(image.bzimage),
        "-initrd",
        str(initramfs),
        "-append",
        "console=ttyS0 panic=-1 random.trust_cpu=on mitigations=off loglevel=4",
        "-device",
        "virtio-rng-pci",
    ]
    for tag, path, read_only in shares:
        arguments += [
            "-fsdev",
            f"local,id={tag},path={path},security_model=none,multidevs=remap"
            + (",readonly=on" if read_only else ""),
            "-device",
            f"virtio-9p-pci,fsdev={tag},mount_tag={tag}",
        ]
    for layer in layers:
        arguments += ["-drive", f"file={layer.image},format=raw,if=virtio,readonly=on"]
    (work / "qemu-command").write_text(shlex.join(arguments) + "\n")
    started = time.monotonic()
    process = subprocess.Popen(
        arguments,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)
        _, stderr = process.communicate()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    seconds = time.monotonic() - started
    if stderr.strip():
        with console.open("ab") as log:
            log.write(b"\nqemu: " + stderr)
    status_file = results / "exit-status"
    exit_status = int(status_file.read_text().strip()) if status_file.exists() else None
    return Outcome(exit_status, seconds, accelerator, console, timed_out)


def guest_python_layers(tree: Path, work: Path) -> list[Layer]:
    """The images of this Python's install, the venv and the tree, for the guest."""
    venv, base = Path(sys.prefix), Path(sys.base_prefix)
    layers = []
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    # The install's own site-packages is not the venv's; its tests are not needed.
    base_excluded = [f"lib/{version}/{name}" for name in ("site-packages", "test", "idlelib", "tkinter")]
    build_ext4_image(base, work / "python.img", base_excluded)
    layers.append(Layer(base, work / "python.img"))
    tree_excluded = [
        ".git",
        ".venv",
        ".nox",
        "tests/statsd/node_modules",
        "bench-results",
        "e2e-logs",
        "kernel-logs",
        "site",
    ]
    build_ext4_image(tree, work / "tree.img", tree_excluded)
    layers.append(Layer(tree, work / "tree.img", writable=True))
    if venv != base:
        build_ext4_image(venv, work / "venv.img")
        layers.append(Layer(venv, work / "venv.img"))
    return layers
