"""What an uploaded file may be called, and what a file must be to become an image.

Theory of operation. An image file is decided on from its bytes, never from what
qemu-img would guess: the magic bytes say qcow2 (``QFI\\xfb``) or raw (anything else that
is not another known disk format), and every qemu-img command is given that format with
``-f``. A file named ``*.qcow2`` that is not qcow2 is refused rather than taken as raw.

``qemu-img info`` (under address-space and CPU limits) reports the image without opening
any backing or data file; ``judge_info`` then refuses what must never reach a host: a
backing file (``/etc/passwd``, ``json:{...}``), an external data file, encryption, a
virtual size over the limit. A qcow2 that passes is checked with ``qemu-img check``;
corruption (a truncated file, damaged tables) refuses it. Only then is it converted to raw.

Every refusal is an ``InputError`` on the field ``file`` whose reason says what is wrong.
The judging functions are pure; ``inspect`` and ``convert_to_raw`` run qemu-img. Callers
pass a private copy of the user's file, so it cannot change between check and use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ucloud.errors import InputError, UcloudError

Format = Literal["qcow2", "raw"]
QCOW2_MAGIC = b"QFI\xfb"
# Disk formats that are neither qcow2 nor raw: refused rather than taken as raw bytes.
OTHER_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"KDMV", "vmdk"),
    (b"# Disk DescriptorFile", "vmdk"),
    (b"conectix", "vpc"),
    (b"vhdxfile", "vhdx"),
    (b"LUKS\xba\xbe", "luks"),
    (b"QED\x00", "qed"),
    (b"<<< Oracle VM VirtualBox Disk Image >>>", "vdi"),
)
HEAD_BYTES = 512
GIB = 1 << 30
CHUNK = 1 << 20
_ZERO = bytes(CHUNK)

# qemu-img info/check on hostile input: bounded memory and CPU (as OpenStack does).
INFO_ADDRESS_SPACE = 1 << 30
INFO_CPU_S = 30
INFO_TIMEOUT_S = 60.0
CONVERT_TIMEOUT_S = 4 * 3600.0

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
MAX_NAME = 128


def check_file_name(name: str, field: str = "name") -> None:
    """A file name: letters, digits, ``.``, ``_``, ``-``; no leading dot, no ``..``."""
    if not name:
        raise InputError(field, "a file name is required")
    if len(name) > MAX_NAME:
        raise InputError(field, f"a file name has at most {MAX_NAME} characters")
    if "/" in name or "\\" in name:
        raise InputError(field, "a file name must not contain '/' or '\\'")
    if ".." in name:
        raise InputError(field, "a file name must not contain '..'")
    if name.startswith("."):
        raise InputError(field, "a file name must not start with '.'")
    if not _NAME.match(name):
        raise InputError(
            field, "use letters, digits, '.', '_' or '-', starting with a letter or digit"
        )


def check_image_name(name: str, field: str = "name") -> None:
    """An image name: like a file name, at most 63 characters."""
    check_file_name(name, field)
    if len(name) > 63:
        raise InputError(field, "an image name has at most 63 characters")


def sniff(head: bytes) -> Format:
    """The format of a file from its first bytes; InputError for other disk formats."""
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    for magic, name in OTHER_MAGICS:
        if head.startswith(magic):
            raise InputError("file", f"is a {name} image; only qcow2 and raw are accepted")
    return "raw"


def judge_name(name: str, fmt: Format) -> None:
    if name.lower().endswith(".qcow2") and fmt != "qcow2":
        raise InputError("file", "named .qcow2 but is not a qcow2 image")


def judge_info(info: Mapping[str, Any], fmt: Format, max_virtual_bytes: int) -> int:
    """The virtual size of an image ``qemu-img info`` described; InputError when refused."""
    if info.get("format") != fmt:
        raise InputError("file", f"qemu-img reads it as {info.get('format')!r}, not {fmt}")
    for key in ("backing-filename", "full-backing-filename"):
        if key in info:
            raise InputError(
                "file", f"has a backing file ({_shown(info[key])}); images must stand alone"
            )
    specific = info.get("format-specific")
    data: Mapping[str, Any] = {}
    if isinstance(specific, Mapping) and isinstance(specific.get("data"), Mapping):
        data = specific["data"]
    if "data-file" in data:
        raise InputError(
            "file", f"uses an external data file ({_shown(data['data-file'])}); refused"
        )
    if info.get("encrypted") or "encrypt" in data:
        raise InputError("file", "is encrypted; upload an unencrypted image")
    if data.get("corrupt") is True:
        raise InputError("file", "is corrupt (qemu-img marks it so)")
    size = info.get("virtual-size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise InputError("file", "has no virtual size (empty or unreadable)")
    if size > max_virtual_bytes:
        raise InputError(
            "file",
            f"virtual size {size / GIB:.1f} GiB is over the limit of "
            f"{max_virtual_bytes / GIB:g} GiB",
        )
    return size


def judge_check(report: Mapping[str, Any] | None, returncode: int, detail: str) -> None:
    """Refuse a qcow2 that ``qemu-img check`` found corrupt (leaked clusters are harmless)."""
    if report is None or returncode not in (0, 2, 3):
        raise InputError("file", f"is corrupt: qemu-img check failed: {detail}")
    corruptions = int(report.get("corruptions", 0) or 0)
    errors = int(report.get("check-errors", 0) or 0)
    if corruptions or errors or returncode == 2:
        raise InputError("file", f"is corrupt: {corruptions} corruptions, {errors} check errors")


@dataclass(frozen=True, slots=True)
class Inspection:
    format: Format
    virtual_size: int


def inspect(path: Path, name: str, max_virtual_bytes: int) -> Inspection:
    """Decide the format of the file at ``path`` (named ``name`` by its owner) and refuse
    anything ``judge_info`` or ``judge_check`` refuses."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
    if not head:
        raise InputError("file", "is empty")
    fmt = sniff(head)
    judge_name(name, fmt)
    done = _qemu_img(["info", "--output=json", "-f", fmt, str(path)], INFO_TIMEOUT_S, True)
    if done.returncode != 0:
        said = _tail(done.stderr, {path: name})
        raise InputError("file", f"is not a readable {fmt} image: {said}")
    size = judge_info(_json(done.stdout) or {}, fmt, max_virtual_bytes)
    if fmt == "qcow2":
        checked = _qemu_img(["check", "--output=json", "-f", fmt, str(path)], INFO_TIMEOUT_S, True)
        judge_check(_json(checked.stdout), checked.returncode, _tail(checked.stderr, {path: name}))
    return Inspection(fmt, size)


def convert_to_raw(source: Path, fmt: Format, target: Path, name: str = "the file") -> None:
    """Write the raw content of the (inspected) image ``source`` (named ``name`` by its
    owner) to ``target``."""
    done = _qemu_img(
        ["convert", "-f", fmt, "-O", "raw", str(source), str(target)],
        CONVERT_TIMEOUT_S,
        False,
    )
    if done.returncode != 0:
        target.unlink(missing_ok=True)
        said = _tail(done.stderr, {source: name, target: "the raw image"})
        raise InputError("file", f"cannot be converted to raw: {said}")


def copy_into(source_fd: int, target: Path, digest: Any | None = None) -> int:
    """Copy from ``source_fd`` to a new file ``target``, leaving holes where the content is
    zeros, feeding ``digest`` (hashlib) on the way; returns the bytes copied."""
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        while True:
            chunk = os.read(source_fd, CHUNK)
            if not chunk:
                break
            if digest is not None:
                digest.update(chunk)
            if chunk == _ZERO[: len(chunk)]:
                os.lseek(fd, len(chunk), os.SEEK_CUR)
            else:
                _write_all(fd, chunk)
            size += len(chunk)
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _qemu_img(args: list[str], timeout: float, limited: bool) -> subprocess.CompletedProcess[str]:
    argv = ["qemu-img", *args]
    if limited and shutil.which("prlimit"):
        argv = ["prlimit", f"--as={INFO_ADDRESS_SPACE}", f"--cpu={INFO_CPU_S}", "--", *argv]
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise UcloudError("qemu-img is not installed (Debian package qemu-utils)") from exc
    except subprocess.TimeoutExpired as exc:
        raise InputError("file", f"qemu-img {args[0]} took longer than {timeout:g}s") from exc


def _json(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _tail(text: str, names: Mapping[Path, str] | None = None) -> str:
    """The last line qemu-img said, each of our paths replaced by what its owner calls it:
    a refusal names the user's file, never where the server keeps it."""
    for path, name in (names or {}).items():
        text = text.replace(str(path), name).replace(f"{path.parent}/", "")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no output")[-300:]


def _shown(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 80 else text[:77] + "...")
