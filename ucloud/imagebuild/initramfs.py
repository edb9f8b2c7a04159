"""An initramfs written in memory: the kernel's "newc" cpio format, owned by root.

Writing the archive here, rather than with cpio(1) over a staged directory, keeps the
files owned by uid 0 and lets the image carry /dev/console without creating a device
node on the build machine. Pure: entries in, bytes out.

Format (the kernel's Documentation/driver-api/early-userspace/buffer-format.rst): each
entry is the magic ``070701``, thirteen 8-digit hex fields, the NUL-terminated name padded
to 4 bytes, then the data padded to 4 bytes; the archive ends with ``TRAILER!!!``.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    path: str  # relative to /, no leading slash
    mode: int  # st_mode: type and permissions
    data: bytes = b""  # a file's content, or a symlink's target
    rdev: tuple[int, int] = (0, 0)  # a device node's (major, minor)


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def regular(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def newc(entries: Iterable[Entry], mtime: int = 0) -> bytes:
    """The archive of ``entries``; parent directories are added (0755) where missing.

    Every parent precedes its children, because the kernel's unpacker creates no
    directories of its own. A path given twice, or absolute, is an error.
    """
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = entry.path.strip("/")
        if not path or entry.path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"initramfs path {entry.path!r} must be relative and plain")
        if path in by_path:
            raise ValueError(f"initramfs path {path!r} given twice")
        by_path[path] = entry
    for path in list(by_path):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            existing = by_path.setdefault(parent, directory(parent))
            if not stat.S_ISDIR(existing.mode):
                raise ValueError(f"initramfs path {parent!r} is a parent but not a directory")
    out = bytearray()
    for ino, path in enumerate(sorted(by_path, key=lambda p: p.split("/")), 1):
        entry = by_path[path]
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        out += _header(path, ino, entry.mode, nlink, mtime, entry.data, entry.rdev)
    out += _header("TRAILER!!!", 0, 0, 1, 0, b"", (0, 0))
    return bytes(out)


def _header(
    name: str, ino: int, mode: int, nlink: int, mtime: int, data: bytes, rdev: tuple[int, int]
) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    head = b"070701" + b"".join(f"{field:08x}".encode() for field in fields) + encoded
    return _pad(head) + _pad(data)


def _pad(chunk: bytes) -> bytes:
    return chunk + b"\0" * (-len(chunk) % 4)
