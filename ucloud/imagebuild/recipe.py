"""What a built-in image recipe is, and the context it builds in.

A recipe names its Debian packages, the repository files whose content defines the image
(its code and data files; the recipe hash is taken over them), and an ``assemble`` step
that turns a scratch directory into a raw, bootable disk image. The builder around it
keeps the cache, the lock and the final rename; a recipe only writes inside ``work``.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ucloud.errors import ImageBuildError
from ucloud.imagebuild.groups import run_in_group

# The Debian release of the images, and the files every recipe shares.
SUITE = "bookworm"
APT_NO_TRANSLATIONS = '--aptopt=Acquire::Languages "none"'
COMMON_FILES = (
    "imagebuild/recipe.py",
    "imagebuild/disk.py",
    "imagebuild/sources.py",
)

# Tool -> the Debian package that provides it (scripts/setup installs them).
TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "sfdisk": "fdisk",
    "grub-mkimage": "grub-common",
    "depmod": "kmod",
    "qemu-img": "qemu-utils",
    "chroot": "coreutils",
}

_OUTPUT_TAIL = 2000


@dataclass
class BuildContext:
    """Where a recipe builds, and how it reports and runs commands."""

    name: str
    digest: str  # the recipe hash: names the image, seeds its fixed ids
    work: Path  # scratch directory, removed after the build
    mirrors: list[str]  # mmdebstrap mirror lines, from the machine's apt sources
    package_dir: Path  # the ucloud package directory (recipes read their data files here)
    progress: Callable[[str], None]
    _started: float = field(default_factory=time.monotonic)
    _step: str = "start"

    def step(self, text: str) -> None:
        self._step = text
        self.progress(f"{self.name}: {text} (+{time.monotonic() - self._started:.0f}s)")

    def fail(self, reason: str) -> ImageBuildError:
        return ImageBuildError(self.name, self._step, reason)

    def run(self, argv: Sequence[str | Path], *, input: bytes | None = None) -> str:
        """Run a command; its failure becomes an ImageBuildError with the output's tail.

        It runs in a process group of its own, stopped whole if the build is stopped.
        """
        return self.run_bytes(argv, input=input).decode(errors="replace")

    def run_bytes(self, argv: Sequence[str | Path], *, input: bytes | None = None) -> bytes:
        args = [str(a) for a in argv]
        try:
            code, stdout, stderr = run_in_group(args, input)
        except FileNotFoundError as exc:
            raise self.fail(f"{args[0]} not found: {_install_hint(args[0])}") from exc
        if code != 0:
            output = (stdout + stderr).decode(errors="replace")[-_OUTPUT_TAIL:]
            raise self.fail(f"{' '.join(args[:3])} ... exited {code}:\n{output}")
        return stdout

    def data(self, relative: str) -> bytes:
        return (self.package_dir / relative).read_bytes()


@dataclass(frozen=True)
class Recipe:
    name: str
    packages: tuple[str, ...]
    files: tuple[str, ...]  # relative to the ucloud package directory
    assemble: Callable[[BuildContext], Path]  # returns the raw disk image inside work
    optional_files: tuple[str, ...] = ()  # part of the image (and the hash) when present


def missing_tools(tools: Sequence[str] = tuple(TOOLS)) -> list[str]:
    return [f"{t} ({TOOLS.get(t, t)})" for t in tools if shutil.which(t) is None]


def _install_hint(tool: str) -> str:
    return f"install Debian package {TOOLS.get(tool, tool)} (scripts/setup does)"
