"""The ``debian`` image: Debian 12 minbase with systemd, OpenSSH and python3, for users.

Networking is systemd-networkd only (no ifupdown): IPv6 from router advertisements,
DNS from their RDNSS through systemd-resolved, no DHCP, no IPv4. The console is ttyS0
with a login prompt; root has no password (keys arrive later through ucloud-init). Host
keys and the machine id are not baked in: each VM makes its own at first boot. When the
repository carries ``ucloud/init/ucloud_init.py`` it becomes ``/usr/local/sbin/ucloud-init``
with the ``ucloud-init.service`` unit enabled; without it the image has neither.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from ucloud.imagebuild import disk
from ucloud.imagebuild.recipe import (
    APT_NO_TRANSLATIONS,
    COMMON_FILES,
    SUITE,
    BuildContext,
    Recipe,
)

PACKAGES = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "udev",
    "dbus",
    "systemd-resolved",
    "openssh-server",
    "python3-minimal",
    "iproute2",
    "netbase",
    "zstd",
)
# Documentation, manuals and translations stay out of the image (and of later installs).
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/lintian/*",
)
UNITS = (
    "systemd-networkd.service",
    "systemd-resolved.service",
    "ucloud-ssh-keygen.service",
    "serial-getty@ttyS0.service",
)
CMDLINE = "ro console=tty0 console=ttyS0,115200"
DISK_MIB = 2048
HOSTNAME = "debian"
UCLOUD_INIT = "init/ucloud_init.py"
UCLOUD_INIT_UNIT = "init/ucloud-init.service"
_FILES = "imagebuild/files/"


def assemble(ctx: BuildContext) -> Path:
    root = ctx.work / "root"
    ctx.step("installing Debian 12 (mmdebstrap, takes minutes)")
    options = ["--quiet", "--mode=root", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
    options += [APT_NO_TRANSLATIONS, *(f"--dpkgopt={option}" for option in DPKG_EXCLUDES)]
    ctx.run(["mmdebstrap", *options, SUITE, root, *ctx.mirrors])
    ctx.step("configuring the system")
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ucloud:image:debian:{ctx.digest}"))
    configure(ctx, root, fs_uuid)
    raw = ctx.work / "disk.raw"
    disk.write_disk(ctx, root, raw, size_mib=DISK_MIB, label="debian", fs_uuid=fs_uuid)
    return raw


def configure(ctx: BuildContext, root: Path, fs_uuid: str) -> None:
    """Files, first-boot state and enabled units of the installed tree."""
    etc = root / "etc"
    (etc / "hostname").write_text(f"{HOSTNAME}\n")
    (etc / "hosts").write_text(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
    (etc / "fstab").write_text(f"UUID={fs_uuid}\t/\text4\terrors=remount-ro\t0\t1\n")
    (etc / "systemd" / "network" / "50-ucloud.network").write_bytes(
        ctx.data(_FILES + "debian-ucloud.network")
    )
    units = etc / "systemd" / "system"
    (units / "ucloud-ssh-keygen.service").write_bytes(
        ctx.data(_FILES + "ucloud-ssh-keygen.service")
    )
    enable = list(UNITS)
    program = ctx.package_dir / UCLOUD_INIT
    if program.is_file():
        target = root / "usr" / "local" / "sbin" / "ucloud-init"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(program.read_bytes())
        target.chmod(0o755)
        (units / "ucloud-init.service").write_bytes(ctx.data(UCLOUD_INIT_UNIT))
        enable.append("ucloud-init.service")
    ctx.run(["chroot", root, "systemctl", "--root=/", "enable", *enable])
    resolv = etc / "resolv.conf"
    if not resolv.is_symlink():
        resolv.unlink(missing_ok=True)
        resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "machine-id").write_text("")
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()
    kernel, initrd = boot_files(ctx, root)
    (root / "boot" / "grub").mkdir(parents=True, exist_ok=True)
    (root / "boot" / "grub" / "grub.cfg").write_text(grub_cfg(kernel, initrd, fs_uuid))


def boot_files(ctx: BuildContext, root: Path) -> tuple[str, str]:
    """The kernel and initramfs GRUB loads: Debian's /vmlinuz links when present.

    The links follow kernel upgrades made inside the VM, so grub.cfg stays right.
    """
    for kernel, initrd in (("/vmlinuz", "/initrd.img"), ("/boot/vmlinuz", "/boot/initrd.img")):
        if (root / kernel[1:]).exists() and (root / initrd[1:]).exists():
            return kernel, initrd
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ctx.fail("no kernel in /boot")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    if not (root / "boot" / f"initrd.img-{version}").exists():
        raise ctx.fail(f"no initramfs for kernel {version} in /boot")
    return f"/boot/vmlinuz-{version}", f"/boot/initrd.img-{version}"


def grub_cfg(kernel: str, initrd: str, fs_uuid: str) -> str:
    return (
        "serial --unit=0 --speed=115200\n"
        "terminal_input serial console\n"
        "terminal_output serial console\n"
        "set timeout=1\n"
        'menuentry "Debian 12 (ucloud)" {\n'
        f"\tlinux {kernel} root=UUID={fs_uuid} {CMDLINE}\n"
        f"\tinitrd {initrd}\n"
        "}\n"
    )


RECIPE = Recipe(
    name="debian",
    packages=PACKAGES,
    files=(
        *COMMON_FILES,
        "imagebuild/debian.py",
        _FILES + "debian-ucloud.network",
        _FILES + "ucloud-ssh-keygen.service",
    ),
    assemble=assemble,
    optional_files=(UCLOUD_INIT, UCLOUD_INIT_UNIT),
)
