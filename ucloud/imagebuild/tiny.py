"""The ``tiny`` image: Debian's cloud kernel and a busybox initramfs, for tests.

It boots in seconds under TCG, prints ``ucloud-tiny: up`` on the serial console, brings
its links up for IPv6 SLAAC, opens a root shell on ttyS0 and powers off on the ACPI
power button (QMP ``system_powerdown``) through busybox acpid. The whole system is the
initramfs; the disk holds only /boot (kernel, initramfs, grub.cfg) behind GRUB.
"""

from __future__ import annotations

import gzip
import lzma
import shutil
import uuid
from pathlib import Path

from ucloud.imagebuild import disk, initramfs
from ucloud.imagebuild.modules import ModuleError, builtin_names, load_order, parse_modules_dep
from ucloud.imagebuild.recipe import (
    APT_NO_TRANSLATIONS,
    COMMON_FILES,
    SUITE,
    BuildContext,
    Recipe,
)

PACKAGES = ("linux-image-cloud-amd64", "busybox-static")
# virtio devices, the entropy source, and the power button reaching acpid via evdev.
MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
    "button",
    "evdev",
)
CMDLINE = "console=ttyS0 quiet panic=-1"
UP_LINE = "ucloud-tiny: up"
DISK_MIB = 64
_FILES = "imagebuild/files/"


def assemble(ctx: BuildContext) -> Path:
    root = ctx.work / "packages"
    ctx.step("extracting Debian packages")
    options = ["--quiet", "--variant=extract", f"--include={','.join(PACKAGES)}"]
    ctx.run(["mmdebstrap", *options, APT_NO_TRANSLATIONS, SUITE, root, *ctx.mirrors])
    version = kernel_version(ctx, root)
    ctx.step(f"ordering kernel modules of {version}")
    ctx.run(["depmod", "-b", root, version])
    moddir = root / "lib" / "modules" / version
    try:
        modules = load_order(
            MODULES,
            parse_modules_dep((moddir / "modules.dep").read_text()),
            builtin_names((moddir / "modules.builtin").read_text()),
        )
    except ModuleError as exc:
        raise ctx.fail(str(exc)) from exc
    ctx.step("writing the initramfs")
    entries = [
        initramfs.regular(f"lib/modules/{m.name}.ko", module_bytes(ctx, moddir / m.path))
        for m in modules
    ]
    entries.append(
        initramfs.regular("etc/modules", "".join(f"{m.name}\n" for m in modules).encode())
    )
    tree = ctx.work / "tree"
    (tree / "boot" / "grub").mkdir(parents=True)
    busybox = (root / "bin" / "busybox").read_bytes()
    applets = ctx.run([root / "bin" / "busybox", "--list-full"]).split()
    (tree / "boot" / "initrd.img").write_bytes(
        gzip.compress(initramfs.newc(system_entries(ctx, busybox, applets) + entries), mtime=0)
    )
    shutil.copyfile(root / "boot" / f"vmlinuz-{version}", tree / "boot" / "vmlinuz")
    (tree / "boot" / "grub" / "grub.cfg").write_text(grub_cfg())
    raw = ctx.work / "disk.raw"
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ucloud:image:tiny:{ctx.digest}"))
    disk.write_disk(ctx, tree, raw, size_mib=DISK_MIB, label="tiny", fs_uuid=fs_uuid)
    return raw


def system_entries(ctx: BuildContext, busybox: bytes, applets: list[str]) -> list[initramfs.Entry]:
    """Busybox with its applet links, init's files, and the directories init mounts on."""
    entries = [
        initramfs.regular("bin/busybox", busybox, 0o755),
        initramfs.symlink("init", "bin/busybox"),
        initramfs.char_device("dev/console", 5, 1),
        initramfs.regular("etc/inittab", ctx.data(_FILES + "tiny-inittab")),
        initramfs.regular("etc/init.d/rcS", ctx.data(_FILES + "tiny-rcS"), 0o755),
        initramfs.regular("etc/acpi/PWRF/00000080", ctx.data(_FILES + "tiny-poweroff"), 0o755),
        initramfs.regular("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
        initramfs.regular("etc/group", b"root:x:0:\n"),
        initramfs.regular("etc/profile", b"export PS1='tiny# '\n"),
        initramfs.directory("root", 0o700),
        initramfs.directory("tmp", 0o1777),
    ]
    entries += [initramfs.directory(d) for d in ("proc", "sys", "dev", "run", "var/log")]
    entries.append(initramfs.symlink("var/run", "../run"))
    for applet in sorted(set(applets)):
        path = applet.strip("/")
        if path != "bin/busybox" and "/" in path:
            entries.append(initramfs.symlink(path, "/bin/busybox"))
    return entries


def module_bytes(ctx: BuildContext, path: Path) -> bytes:
    """A module file as busybox insmod loads it: uncompressed."""
    data = path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        return ctx.run_bytes(["zstd", "-dc", path])
    return data


def grub_cfg() -> str:
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        f"linux /boot/vmlinuz {CMDLINE}\n"
        "initrd /boot/initrd.img\n"
        "boot\n"
    )


def kernel_version(ctx: BuildContext, root: Path) -> str:
    versions = sorted(p.name for p in (root / "lib" / "modules").iterdir())
    if len(versions) != 1:
        raise ctx.fail(f"expected one kernel in {PACKAGES[0]}, found {versions or 'none'}")
    return versions[0]


RECIPE = Recipe(
    name="tiny",
    packages=PACKAGES,
    files=(
        *COMMON_FILES,
        "imagebuild/tiny.py",
        "imagebuild/modules.py",
        "imagebuild/initramfs.py",
        _FILES + "tiny-inittab",
        _FILES + "tiny-rcS",
        _FILES + "tiny-poweroff",
    ),
    assemble=assemble,
)
