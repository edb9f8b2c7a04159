"""A BIOS-bootable disk image from a directory tree, without loop devices or mounts.

Theory of operation: the disk is a sparse file with an MBR partition table (sfdisk on
the file) and one ext4 partition starting at 1 MiB, written straight into the file by
``mke2fs -E offset=... -d TREE``. GRUB goes where grub-bios-setup would put it: its
``boot.img`` code in the MBR and ``core.img`` (biosdisk, part_msdos, ext2 and what
grub.cfg uses, built in) in the gap before the partition; its prefix points at
``(hd0,msdos1)/boot/grub``, so the tree's ``boot/grub/grub.cfg`` is the menu.
``install_grub`` is the pure part: the disk's first megabyte in, the patched one out.
"""

from __future__ import annotations

import struct
import uuid as uuid_mod
from pathlib import Path

from ucloud.imagebuild.recipe import BuildContext

SECTOR = 512
PARTITION_START = 2048  # sectors: 1 MiB, the gap that holds core.img
GRUB_DIR = Path("/usr/lib/grub/i386-pc")
GRUB_MODULES = (
    "biosdisk",
    "part_msdos",
    "ext2",
    "normal",
    "linux",
    "echo",
    "test",
    "serial",
    "terminal",
    "configfile",
)
GRUB_PREFIX = "(hd0,msdos1)/boot/grub"
# ext4 features GRUB 2.06 cannot read; newer e2fsprogs may turn them on by default.
EXT4_FEATURES = "^metadata_csum_seed,^orphan_file"

# Offsets in GRUB's boot.img (grub/include/grub/i386/pc/boot.h).
_CODE_END = 0x1B8  # boot code ends where the disk signature starts
_BPB_START, _BPB_END = 0x3, 0x5A  # the BIOS parameter block is the disk's, not GRUB's
_KERNEL_SECTOR = 0x5C  # 8 bytes: LBA of core.img's first sector
_DRIVE_CHECK = 0x66  # a 2-byte jmp; NOPs make GRUB trust only hard disk drive numbers
# The last 12 bytes of core.img's first sector: its blocklist (start LBA, sectors, segment).
_BLOCKLIST = struct.Struct("<QHH")


class DiskError(ValueError):
    """GRUB's images do not fit or are not what grub-mkimage makes."""


def install_grub(head: bytes, boot_img: bytes, core_img: bytes) -> bytes:
    """The disk's first ``PARTITION_START`` sectors with GRUB's boot.img and core.img in.

    ``head`` must already hold the partition table; it is kept, as is the disk signature.
    core.img goes to sector 1 and must end before the first partition.
    """
    if len(head) != PARTITION_START * SECTOR:
        raise DiskError(f"head is {len(head)} bytes, not {PARTITION_START * SECTOR}")
    if len(boot_img) != SECTOR or boot_img[510:512] != b"\x55\xaa":
        raise DiskError("boot.img is not a 512-byte boot sector")
    if head[510:512] != b"\x55\xaa":
        raise DiskError("the disk has no MBR partition table")
    sectors = -(-len(core_img) // SECTOR)
    if sectors < 2 or 1 + sectors > PARTITION_START:
        raise DiskError(f"core.img has {sectors} sectors; the gap holds {PARTITION_START - 1}")
    start, count, _segment = _BLOCKLIST.unpack_from(core_img, SECTOR - _BLOCKLIST.size)
    if (start, count) != (2, sectors - 1):
        raise DiskError(f"core.img's blocklist is ({start}, {count}), not (2, {sectors - 1})")
    disk = bytearray(head)
    mbr = bytearray(boot_img[:_CODE_END])
    mbr[_BPB_START:_BPB_END] = head[_BPB_START:_BPB_END]
    struct.pack_into("<Q", mbr, _KERNEL_SECTOR, 1)
    mbr[_DRIVE_CHECK : _DRIVE_CHECK + 2] = b"\x90\x90"
    disk[:_CODE_END] = mbr
    disk[SECTOR : SECTOR + len(core_img)] = core_img
    return bytes(disk)


def partition_script(size_mib: int, label_id: int) -> str:
    """sfdisk's input: one bootable Linux partition from 1 MiB to the end."""
    if size_mib < 8:
        raise DiskError(f"a disk of {size_mib} MiB is too small")
    return f"label: dos\nlabel-id: 0x{label_id:08x}\nstart={PARTITION_START}, type=83, bootable\n"


def write_disk(
    ctx: BuildContext, tree: Path, raw: Path, *, size_mib: int, label: str, fs_uuid: str
) -> None:
    """Write ``tree`` as the root filesystem of a new bootable disk image ``raw``."""
    ctx.step(f"writing a {size_mib} MiB disk")
    with raw.open("wb") as f:
        f.truncate(size_mib << 20)
    label_id = uuid_mod.UUID(fs_uuid).int & 0xFFFFFFFF
    ctx.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw],
        input=partition_script(size_mib, label_id).encode(),
    )
    offset = PARTITION_START * SECTOR
    fs_kib = ((size_mib << 20) - offset) >> 10
    ext4 = ["-t", "ext4", "-O", EXT4_FEATURES, "-L", label, "-U", fs_uuid]
    placement = ["-E", f"offset={offset},root_owner=0:0"]
    ctx.run(["mke2fs", "-q", "-F", *ext4, *placement, "-d", tree, raw, f"{fs_kib}k"])
    ctx.step("installing GRUB")
    core = ctx.work / "core.img"
    grub: list[str | Path] = ["-O", "i386-pc", "-d", GRUB_DIR, "-o", core, "-p", GRUB_PREFIX]
    ctx.run(["grub-mkimage", *grub, *GRUB_MODULES])
    boot_img = (GRUB_DIR / "boot.img").read_bytes()
    with raw.open("r+b") as f:
        head = f.read(offset)
        f.seek(0)
        f.write(install_grub(head, boot_img, core.read_bytes()))


def to_qcow2(ctx: BuildContext, raw: Path, out: Path) -> None:
    ctx.step("converting to qcow2")
    ctx.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out])
