"""Debian's kernel images, fetched and unpacked into a cache, never installed.

apt runs with a configuration of its own per distribution (sources, state, cache and
preferences under the cache directory), so the machine's sources and package state are never
touched, and the suites of another release (bullseye on a bookworm host) are reachable. The
mirror is the one this machine's apt already uses for Debian. Each image is `apt-get download`ed
and unpacked with `dpkg-deb -x`; `depmod` then writes the modules.dep Debian's postinst would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from attrs import frozen

from tests.kernels.matrix import MatrixKernel

KEYRING: Final = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


class ImageError(Exception):
    """A kernel image cannot be had (no mirror, no such package, a failed download)."""


def cache_root() -> Path:
    """~/.cache/kstat/kernels, or KSTAT_KERNEL_CACHE."""
    configured = os.environ.get("KSTAT_KERNEL_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kstat" / "kernels"


@frozen
class KernelImage:
    """An unpacked kernel package: its bzImage and its modules, with modules.dep."""

    kernel: MatrixKernel
    package: str
    version: str
    root: Path  # what dpkg-deb -x unpacked
    release: str  # `uname -r` inside, the name of its modules directory

    @property
    def bzimage(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release


def debian_mirrors() -> tuple[str, str]:
    """The Debian archive and security archive this machine's apt uses."""
    try:
        listed = subprocess.run(
            ["apt-get", "indextargets", "--format", "$(LABEL) $(REPO_URI)"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise ImageError(f"cannot ask apt for this machine's Debian mirror: {error}") from None
    by_label: dict[str, str] = {}
    for line in listed.splitlines():
        label, _, uri = line.partition(" ")
        by_label.setdefault(label, uri)
    archive = os.environ.get("KSTAT_DEBIAN_MIRROR") or by_label.get("Debian")
    security = os.environ.get("KSTAT_DEBIAN_SECURITY_MIRROR") or by_label.get("Debian-Security")
    if not archive or not security:
        raise ImageError(
            "this machine's apt has no Debian archive and security archive to fetch kernels from; "
            "set KSTAT_DEBIAN_MIRROR and KSTAT_DEBIAN_SECURITY_MIRROR"
        )
    return archive, security


class PrivateApt:
    """apt for one Debian distribution, with every directory of its own under `root`."""

    def __init__(self, root: Path, distribution: str, mirrors: tuple[str, str]) -> None:
        self.root = root
        self.distribution = distribution
        archive, security = mirrors
        for directory in ("state/lists/partial", "cache/archives/partial", "sources.d", "preferences.d"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        (root / "state" / "status").touch()
        signed = f"[signed-by={KEYRING}]"
        (root / "sources.list").write_text(
            f"deb {signed} {archive} {distribution} main\n"
            f"deb {signed} {security} {distribution}-security main\n"
        )

    def _options(self) -> list[str]:
        settings = {
            "Dir::Etc::SourceList": self.root / "sources.list",
            "Dir::Etc::SourceParts": self.root / "sources.d",
            "Dir::Etc::Preferences": self.root / "preferences",
            "Dir::Etc::PreferencesParts": self.root / "preferences.d",
            "Dir::State": self.root / "state",
            "Dir::State::status": self.root / "state" / "status",
            "Dir::Cache": self.root / "cache",
            "APT::Architectures": "amd64",
            "Acquire::Languages": "none",
            # Downloads land in the cache, which the unprivileged _apt user may not enter.
            "APT::Sandbox::User": "root",
        }
        return [option for name, value in settings.items() for option in ("-o", f"{name}={value}")]

    def run(self, tool: str, *arguments: str, cwd: Path | None = None) -> str:
        completed = subprocess.run(
            [tool, *self._options(), *arguments], capture_output=True, text=True, cwd=cwd, check=False
        )
        if completed.returncode != 0:
            detail = (completed.stderr.strip().splitlines() or ["no message"])[-1]
            raise ImageError(f"{tool} {' '.join(arguments)} ({self.distribution}): {detail}")
        return completed.stdout

    def update(self) -> None:
        self.run("apt-get", "-q", "update")

    def field(self, package: str, name: str) -> str:
        shown = self.run("apt-cache", "show", "--no-all-versions", package)
        for line in shown.splitlines():
            if line.startswith(f"{name}: "):
                return line.split(": ", 1)[1]
        raise ImageError(f"{package} ({self.distribution}) has no {name} field")


_DEPENDENCY: Final = re.compile(r"^(linux-image-\S+)")


def resolve(apt: PrivateApt, kernel: MatrixKernel) -> tuple[str, str]:
    """The image package the meta-package depends on today, and its version."""
    depends = apt.field(kernel.meta_package, "Depends")
    for dependency in depends.split(","):
        found = _DEPENDENCY.match(dependency.strip())
        if found:
            package = found.group(1)
            version = apt.field(package, "Version")
            if not version.startswith(kernel.name + "."):
                raise ImageError(
                    f"{kernel.meta_package} in {kernel.distribution} is {version} now, not {kernel.name}: "
                    "update the matrix (tests/kernels/matrix.py)"
                )
            return package, version
    raise ImageError(f"{kernel.meta_package} in {kernel.distribution} names no linux-image package")


def _unpacked_release(root: Path) -> str:
    found = sorted(path.name for path in (root / "lib" / "modules").iterdir() if path.is_dir())
    if len(found) != 1:
        raise ImageError(f"{root} holds {len(found)} module directories, not one")
    return found[0]


def _remember(cache: Path, kernel: MatrixKernel, package: str, version: str) -> None:
    resolutions = cache / "resolved.json"
    known = json.loads(resolutions.read_text()) if resolutions.exists() else {}
    known[kernel.name] = {"package": package, "version": version}
    temporary = resolutions.with_suffix(".tmp")
    temporary.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    temporary.replace(resolutions)


def _remembered(cache: Path, kernel: MatrixKernel) -> tuple[str, str] | None:
    resolutions = cache / "resolved.json"
    if not resolutions.exists():
        return None
    entry = json.loads(resolutions.read_text()).get(kernel.name)
    return None if entry is None else (entry["package"], entry["version"])


def fetch(kernels: Sequence[MatrixKernel], cache: Path, say: Callable[[str], None]) -> list[KernelImage]:
    """Each kernel's image, unpacked in the cache: resolved, downloaded and unpacked only when
    the cache lacks it. Without the mirror, the image last resolved is used, if cached."""
    mirrors: tuple[str, str] | None
    try:
        mirrors = debian_mirrors()
    except ImageError as error:
        mirrors = None
        unreachable = str(error)
    updated: dict[str, PrivateApt] = {}
    images = []
    for kernel in kernels:
        package_version: tuple[str, str] | None = None
        apt = None
        if mirrors is not None:
            try:
                apt = updated.get(kernel.distribution)
                if apt is None:
                    apt = PrivateApt(cache / "apt" / kernel.distribution, kernel.distribution, mirrors)
                    apt.update()
                    updated[kernel.distribution] = apt
                package_version = resolve(apt, kernel)
                _remember(cache, kernel, *package_version)
            except ImageError as error:
                unreachable = str(error)
                apt = None
        if package_version is None:
            package_version = _remembered(cache, kernel)
            if package_version is None:
                raise ImageError(f"no image of {kernel.name} in the cache, and {unreachable}")
        package, version = package_version
        tree = cache / "trees" / f"{package}_{version}"
        if not (tree / ".complete").exists():
            if apt is None:
                raise ImageError(f"{package} {version} is not in the cache, and {unreachable}")
            _download_and_unpack(apt, package, version, cache=cache, tree=tree, say=say)
        images.append(KernelImage(kernel, package, version, tree, _unpacked_release(tree)))
    return images


def _download_and_unpack(
    apt: PrivateApt, package: str, version: str, *, cache: Path, tree: Path, say: Callable[[str], None]
) -> None:
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    say(f"fetching {package} {version} ({apt.distribution})")
    with tempfile.TemporaryDirectory(dir=debs) as download:
        apt.run("apt-get", "-q", "download", f"{package}={version}", cwd=Path(download))
        (deb,) = Path(download).glob("*.deb")
        tree.parent.mkdir(parents=True, exist_ok=True)
        unpacking = Path(tempfile.mkdtemp(dir=tree.parent, prefix=".unpacking-"))
        try:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacking)], check=True)
            release = _unpacked_release(unpacking)
            # What the package's postinst would do on an installed system.
            subprocess.run(["depmod", "-b", str(unpacking), release], check=True)
            (unpacking / ".complete").touch()
            if tree.exists():
                shutil.rmtree(tree)
            unpacking.rename(tree)
        except BaseException:
            shutil.rmtree(unpacking, ignore_errors=True)
            raise
