"""File names, format sniffing and the judging of qemu-img's reports (pure)."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud.errors import InputError
from ucloud.images.base import DiskRef
from ucloud.images.store import FsStore
from ucloud.images.validate import (
    GIB,
    check_file_name,
    check_image_name,
    judge_check,
    judge_info,
    judge_name,
    sniff,
)


@pytest.mark.parametrize("name", ["my.qcow2", "a", "debian-12.qcow2", "x_y-z.1", "A" * 128])
def test_good_file_names(name: str) -> None:
    check_file_name(name)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "required"),
        ("..", "'..'"),
        ("../etc/passwd", "'/'"),
        ("a/b", "'/'"),
        ("a\\b", "'\\'"),
        ("a..b", "'..'"),
        (".hidden", "start with '.'"),
        ("-x", "starting with a letter or digit"),
        ("a b", "letters, digits"),
        ("név", "letters, digits"),
        ("a\x00b", "letters, digits"),
        ("A" * 129, "at most 128"),
    ],
)
def test_bad_file_names_are_refused_naming_the_field(name: str, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        check_file_name(name, "--name")
    assert caught.value.field == "--name"
    assert reason in caught.value.reason


def test_image_names_are_file_names_of_at_most_63_characters() -> None:
    check_image_name("a" * 63)
    with pytest.raises(InputError, match="at most 63"):
        check_image_name("a" * 64)


@given(st.text(min_size=1, max_size=40))
def test_an_accepted_name_never_leaves_its_directory(name: str) -> None:
    try:
        check_file_name(name)
    except InputError:
        return
    root = PurePosixPath("/files/alice")
    joined = root / name
    assert joined.parent == root and joined.name == name
    assert ".." not in joined.parts and not name.startswith(".")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"QFI\xfb\x00\x00\x00\x03", "qcow2"),
        (b"\x00" * 512, "raw"),
        (b"\xeb\x63\x90" + b"\x00" * 509, "raw"),  # an MBR boot sector
        (b"QFI", "raw"),
    ],
)
def test_the_format_comes_from_the_magic_bytes(head: bytes, expected: str) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"KDMV\x01\x00\x00\x00", "vmdk"),
        (b"# Disk DescriptorFile\n", "vmdk"),
        (b"vhdxfile", "vhdx"),
        (b"LUKS\xba\xbe\x00\x01", "luks"),
        (b"conectix", "vpc"),
    ],
)
def test_other_disk_formats_are_refused(head: bytes, name: str) -> None:
    with pytest.raises(InputError, match=f"is a {name} image"):
        sniff(head)


def test_a_raw_file_named_qcow2_is_refused() -> None:
    with pytest.raises(InputError, match="named .qcow2 but is not a qcow2 image"):
        judge_name("mine.QCOW2", "raw")
    judge_name("mine.qcow2", "qcow2")
    judge_name("mine.img", "raw")


def _info(**extra: Any) -> dict[str, Any]:
    data = {"compat": "1.1", "corrupt": False, **extra.pop("data", {})}
    return {
        "virtual-size": 64 << 20, "format": "qcow2",
        "format-specific": {"type": "qcow2", "data": data}, **extra,
    }


LIMIT = 10 * GIB


def test_a_plain_image_passes_with_its_virtual_size() -> None:
    assert judge_info(_info(), "qcow2", LIMIT) == 64 << 20
    assert judge_info({"virtual-size": 4096, "format": "raw"}, "raw", LIMIT) == 4096


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (_info(**{"backing-filename": "/etc/passwd", "full-backing-filename": "/etc/passwd"}),
         "has a backing file ('/etc/passwd')"),
        (_info(**{"backing-filename": 'json:{"driver":"file","filename":"/etc/shadow"}'}),
         "has a backing file ('json:"),
        (_info(**{"full-backing-filename": "nbd://evil"}), "has a backing file"),
        (_info(data={"data-file": "/dev/sda"}), "external data file ('/dev/sda')"),
        (_info(data={"encrypt": {"format": "luks"}}), "is encrypted"),
        (_info(encrypted=True), "is encrypted"),
        (_info(data={"corrupt": True}), "is corrupt"),
        (_info(**{"virtual-size": 100 << 40}), "virtual size 102400.0 GiB is over the limit of 10"),
        (_info(**{"virtual-size": 0}), "no virtual size"),
        (_info(format="raw"), "reads it as 'raw', not qcow2"),
    ],
)
def test_hostile_reports_are_refused_with_the_reason(info: dict[str, Any], reason: str) -> None:
    with pytest.raises(InputError) as caught:
        judge_info(info, "qcow2", LIMIT)
    assert caught.value.field == "file"
    assert reason in caught.value.reason


def test_a_long_backing_name_is_shortened_in_the_reason() -> None:
    with pytest.raises(InputError) as caught:
        judge_info(_info(**{"backing-filename": "x" * 500}), "qcow2", LIMIT)
    assert len(caught.value.reason) < 160


@pytest.mark.parametrize(
    ("report", "code", "reason"),
    [
        ({"corruptions": 128, "check-errors": 0}, 2, "128 corruptions"),
        ({"check-errors": 3}, 0, "3 check errors"),
        (None, 1, "qemu-img check failed: boom"),
        ({}, 63, "qemu-img check failed"),
    ],
)
def test_check_refuses_corruption(report: dict[str, Any] | None, code: int, reason: str) -> None:
    with pytest.raises(InputError, match="is corrupt") as caught:
        judge_check(report, code, "boom")
    assert reason in caught.value.reason


def test_check_accepts_clean_images_and_leaks() -> None:
    judge_check({"check-errors": 0}, 0, "")
    judge_check({"leaks": 3, "check-errors": 0}, 3, "")


def test_blockdev_arguments_escape_commas_and_refuse_foreign_disks(tmp_path: Any) -> None:
    store = FsStore(tmp_path / "images", tmp_path / "di,sks")
    disk = DiskRef(store="fs", path=str(tmp_path / "di,sks" / "vm1" / "root-x.qcow2"))
    argv = store.qemu_blockdev(disk, "disk0")
    assert argv[0] == "-blockdev" and "di,,sks" in argv[1] and "node-name=disk0" in argv[1]
    assert argv[2:] == ["-device", "virtio-blk-pci,drive=disk0,id=disk0"]
    with pytest.raises(InputError, match="not a QEMU node name"):
        store.qemu_blockdev(disk, "0,file=/etc/passwd")
    with pytest.raises(InputError, match="not a disk of this store"):
        store.qemu_blockdev(DiskRef(store="fs", path="/etc/passwd"), "disk0")
    with pytest.raises(InputError, match="not a filesystem store disk"):
        store.qemu_blockdev(DiskRef(store="rbd", path="pool/x"), "disk0")


def test_store_paths_refuse_ids_that_are_not_tokens(tmp_path: Any) -> None:
    store = FsStore(tmp_path / "images", tmp_path / "disks")
    for bad in ("../x", "a/b", "", "."):
        with pytest.raises(InputError):
            store.image_path(bad)
        with pytest.raises(InputError):
            store.delete_disks(bad)
