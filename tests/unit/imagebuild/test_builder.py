"""The pure parts of the built-in image builds: module order, recipe hash, apt sources,
the initramfs archive, GRUB's placement on the disk, and the cache around a build."""

from __future__ import annotations

import argparse
import gzip
import lzma
import os
import shutil
import stat
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import ucloud
from ucloud.cli import image_cmd
from ucloud.errors import ImageBuildError, InputError
from ucloud.imagebuild import builder, initramfs, tiny
from ucloud.imagebuild.disk import PARTITION_START, SECTOR, DiskError, install_grub
from ucloud.imagebuild.modules import (
    Module,
    ModuleError,
    builtin_names,
    load_order,
    module_name,
    parse_modules_dep,
)
from ucloud.imagebuild.recipe import BuildContext, Recipe
from ucloud.imagebuild.sources import SourcesError, mirror_lines, parse_deb822, parse_one_line

# An excerpt of Debian 12's cloud kernel modules.dep (depmod's own order of dependencies).
MODULES_DEP = """\
kernel/drivers/acpi/button.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko \
kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko \
kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
""".replace("\\\n", "")


def names(modules: list[Module]) -> list[str]:
    return [m.name for m in modules]


# --- kernel module order --------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "expected"),
    [
        (["button"], ["button"]),
        (
            ["virtio_blk"],
            ["virtio", "virtio_ring", "virtio_blk"],
        ),
        (
            ["virtio_pci", "virtio_net"],
            [
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio",
                "virtio_ring",
                "virtio_pci",
                "failover",
                "net_failover",
                "virtio_net",
            ],
        ),
        (["virtio-rng"], ["virtio", "virtio_ring", "virtio_rng"]),
        (
            ["virtio_net", "virtio_net"],
            ["failover", "net_failover", "virtio", "virtio_ring", "virtio_net"],
        ),
    ],
)
def test_load_order_puts_dependencies_first(wanted: list[str], expected: list[str]) -> None:
    assert names(load_order(wanted, parse_modules_dep(MODULES_DEP))) == expected


def test_load_order_skips_builtin_and_rejects_unknown() -> None:
    deps = parse_modules_dep(MODULES_DEP)
    builtin = builtin_names("kernel/drivers/input/evdev.ko\nkernel/fs/ext4/ext4.ko\n")
    assert names(load_order(["evdev", "button"], deps, builtin)) == ["button"]
    with pytest.raises(ModuleError, match="'nosuch' is neither"):
        load_order(["nosuch"], deps, builtin)


def test_load_order_rejects_a_cycle() -> None:
    deps = parse_modules_dep("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n")
    with pytest.raises(ModuleError, match="cycle: a -> b -> c -> a"):
        load_order(["a"], deps)


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("kernel/drivers/char/hw_random/virtio-rng.ko", "virtio_rng"),
        ("kernel/fs/ext4/ext4.ko.xz", "ext4"),
        ("updates/dkms/zfs.ko.zst", "zfs"),
    ],
)
def test_module_name(path: str, name: str) -> None:
    assert module_name(path) == name


def test_modules_dep_errors_name_the_line() -> None:
    with pytest.raises(ModuleError, match="line 2"):
        parse_modules_dep("a.ko:\nno colon here\n")
    with pytest.raises(ModuleError, match="not a kernel module"):
        module_name("kernel/readme.txt")


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    """Random acyclic dependency tables: module i may need only modules j < i."""
    count = draw(st.integers(1, 12))
    table: dict[str, list[str]] = {}
    for i in range(count):
        needs = draw(st.lists(st.integers(0, i - 1), unique=True)) if i else []
        table[f"m{i}"] = [f"m{j}" for j in needs]
    return table


@given(dags(), st.data())
def test_load_order_property(table: dict[str, list[str]], data: st.DataObject) -> None:
    text = "".join(
        f"k/{m}.ko: {' '.join(f'k/{d}.ko' for d in reversed(ds))}\n" for m, ds in table.items()
    )
    wanted = data.draw(st.lists(st.sampled_from(sorted(table)), min_size=1))
    order = names(load_order(wanted, parse_modules_dep(text)))
    closure: set[str] = set()
    stack = list(wanted)
    while stack:
        m = stack.pop()
        if m not in closure:
            closure.add(m)
            stack += table[m]
    assert sorted(order) == sorted(closure)  # exactly what is needed, each once
    for position, module in enumerate(order):
        assert set(table[module]) <= set(order[:position])  # dependencies first


# --- recipe hash ----------------------------------------------------------------------


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the imagebuild package (and an empty init package) to change files in."""
    root = tmp_path / "ucloud"
    shutil.copytree(
        Path(ucloud.__file__).parent / "imagebuild",
        root / "imagebuild",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    (root / "init").mkdir()
    return root


def test_recipe_hash_is_stable_and_names_the_image(package_copy: Path) -> None:
    for name in builder.NAMES:
        digest = builder.recipe_hash(name, package_copy)
        assert digest == builder.recipe_hash(name, package_copy)
        assert len(digest) == 12 and int(digest, 16) >= 0
        assert builder.image_path(name, Path("/c"), package_copy) == Path(
            f"/c/{name}-{digest}.qcow2"
        )
    assert builder.recipe_hash("tiny", package_copy) != builder.recipe_hash("debian", package_copy)


@pytest.mark.parametrize(
    ("changed", "tiny_changes", "debian_changes"),
    [
        ("imagebuild/files/tiny-rcS", True, False),
        ("imagebuild/tiny.py", True, False),
        ("imagebuild/modules.py", True, False),
        ("imagebuild/debian.py", False, True),
        ("imagebuild/files/debian-ucloud.network", False, True),
        ("imagebuild/disk.py", True, True),
        ("imagebuild/sources.py", True, True),
    ],
)
def test_recipe_hash_changes_with_the_recipe(
    package_copy: Path, changed: str, tiny_changes: bool, debian_changes: bool
) -> None:
    before = {name: builder.recipe_hash(name, package_copy) for name in builder.NAMES}
    path = package_copy / changed
    path.write_bytes(path.read_bytes() + b"\n# changed\n")
    after = {name: builder.recipe_hash(name, package_copy) for name in builder.NAMES}
    assert (before["tiny"] != after["tiny"]) is tiny_changes
    assert (before["debian"] != after["debian"]) is debian_changes


def test_recipe_hash_follows_ucloud_init(package_copy: Path) -> None:
    before = {name: builder.recipe_hash(name, package_copy) for name in builder.NAMES}
    program = package_copy / "init" / "ucloud_init.py"
    program.write_text("print('v1')\n")
    with_v1 = builder.recipe_hash("debian", package_copy)
    program.write_text("print('v2')\n")
    assert with_v1 != before["debian"]
    assert builder.recipe_hash("debian", package_copy) not in (with_v1, before["debian"])
    assert builder.recipe_hash("tiny", package_copy) == before["tiny"]


def test_unknown_image_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no built-in image 'nope'; known: tiny, debian"):
        builder.recipe_hash("nope")


# --- apt sources ----------------------------------------------------------------------

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://security.example/debian-security/
Suites: bookworm-security
Components: main
"""


def test_mirrors_from_deb822() -> None:
    assert mirror_lines(parse_deb822(DEB822), "bookworm") == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://security.example/debian-security bookworm-security main",
    ]


def test_mirrors_from_one_line_sources_put_the_image_suite_on_the_machine_mirror() -> None:
    text = (
        "# comment\n"
        "deb-src http://src.example/debian trixie main\n"
        "deb [signed-by=/k.gpg arch=amd64] http://mirror.example/debian/ trixie main contrib\n"
    )
    assert mirror_lines(parse_one_line(text), "bookworm") == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
    ]


def test_no_archive_in_the_sources_is_an_error() -> None:
    disabled = "Types: deb\nEnabled: no\nURIs: http://x/debian\nSuites: bookworm\n"
    with pytest.raises(SourcesError, match="no Debian archive"):
        mirror_lines(parse_deb822(disabled), "bookworm")


def test_machine_mirrors_reads_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    lines = builder.machine_mirrors(tmp_path)
    assert lines[0] == "deb http://deb.debian.org/debian bookworm main"


# --- initramfs ------------------------------------------------------------------------


def read_newc(archive: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """An independent reader: (name, mode, data, rdev) per entry, trailer excluded."""
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = []
    offset = 0
    while True:
        assert archive[offset : offset + 6] == b"070701"
        fields = [int(archive[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, size, rdev = fields[1], fields[2], fields[3], fields[6], fields[9:11]
        namesize = fields[11]
        name = archive[offset + 110 : offset + 110 + namesize - 1].decode()
        offset += 110 + namesize
        offset += -offset % 4
        data = archive[offset : offset + size]
        offset += size
        offset += -offset % 4
        if name == "TRAILER!!!":
            assert offset == len(archive)
            return entries
        assert (uid, gid) == (0, 0)
        entries.append((name, mode, data, (rdev[0], rdev[1])))


def test_newc_archive_round_trips_with_parents_first() -> None:
    archive = initramfs.newc(
        [
            initramfs.regular("etc/init.d/rcS", b"#!/bin/sh\necho hi\n", 0o755),
            initramfs.symlink("init", "bin/busybox"),
            initramfs.char_device("dev/console", 5, 1),
            initramfs.regular("bin/busybox", b"\x7fELF", 0o755),
        ]
    )
    entries = read_newc(archive)
    order = [name for name, *_ in entries]
    assert order == [
        "bin",
        "bin/busybox",
        "dev",
        "dev/console",
        "etc",
        "etc/init.d",
        "etc/init.d/rcS",
        "init",
    ]
    table = {name: (mode, data, rdev) for name, mode, data, rdev in entries}
    assert table["etc/init.d/rcS"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\necho hi\n", (0, 0))
    assert table["init"] == (stat.S_IFLNK | 0o777, b"bin/busybox", (0, 0))
    assert table["dev/console"] == (stat.S_IFCHR | 0o600, b"", (5, 1))
    assert table["etc"][0] == stat.S_IFDIR | 0o755


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([initramfs.regular("/etc/x", b"")], "must be relative"),
        ([initramfs.regular("a/../b", b"")], "must be relative"),
        ([initramfs.regular("x", b""), initramfs.regular("x", b"")], "given twice"),
        ([initramfs.regular("x", b""), initramfs.regular("x/y", b"")], "not a directory"),
    ],
)
def test_newc_rejects_bad_paths(entries: list[initramfs.Entry], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        initramfs.newc(entries)


# --- GRUB on the disk -----------------------------------------------------------------


def grub_images(core_sectors: int, start: int = 2) -> tuple[bytes, bytes]:
    boot = bytearray(b"\xeb\x63\x90" + bytes(range(256)) * 2)[:SECTOR]
    boot[0x66:0x68] = b"\xeb\x05"
    boot[510:512] = b"\x55\xaa"
    core = bytearray(b"\xc0" * (core_sectors * SECTOR - 100))
    struct.pack_into("<QHH", core, SECTOR - 12, start, core_sectors - 1, 0x820)
    return bytes(boot), bytes(core)


def disk_head() -> bytes:
    head = bytearray(PARTITION_START * SECTOR)
    head[0x1B8:0x1BC] = b"\x12\x34\x56\x78"  # disk signature
    head[0x1BE:0x1CE] = b"\x80\x20\x21\x00\x83" + b"\x11" * 11  # partition 1
    head[510:512] = b"\x55\xaa"
    return bytes(head)


def test_install_grub_keeps_the_partition_table_and_places_core() -> None:
    boot, core = grub_images(280)
    head = disk_head()
    out = install_grub(head, boot, core)
    assert len(out) == len(head)
    assert out[0x1B8:][: SECTOR - 0x1B8] == head[0x1B8:SECTOR]  # signature, table, 55aa
    assert out[:3] == boot[:3] and out[0x5A:0x5C] == boot[0x5A:0x5C]
    assert out[0x3:0x5A] == head[0x3:0x5A]  # the disk's BPB area, not boot.img's
    assert struct.unpack_from("<Q", out, 0x5C) == (1,)  # core.img at LBA 1
    assert out[0x66:0x68] == b"\x90\x90"
    assert out[SECTOR : SECTOR + len(core)] == core
    assert out[SECTOR + len(core) :] == head[SECTOR + len(core) :]


@pytest.mark.parametrize(
    ("core", "head", "message"),
    [
        (grub_images(PARTITION_START)[1], disk_head(), "the gap holds 2047"),
        (grub_images(10, start=7)[1], disk_head(), r"blocklist is \(7, 9\)"),
        (grub_images(10)[1], bytes(PARTITION_START * SECTOR), "no MBR partition table"),
        (grub_images(10)[1], disk_head()[:1024], "head is 1024 bytes"),
    ],
)
def test_install_grub_refuses_what_does_not_fit(core: bytes, head: bytes, message: str) -> None:
    boot, _ = grub_images(10)
    with pytest.raises(DiskError, match=message):
        install_grub(head, boot, core)


# --- the cache around a build ---------------------------------------------------------


@pytest.fixture
def fake_recipe(monkeypatch: pytest.MonkeyPatch, package_copy: Path) -> list[str]:
    """``tiny`` replaced by a recipe writing a 1 MiB raw file; the log of its builds."""
    built: list[str] = []

    def assemble(ctx: BuildContext) -> Path:
        built.append(ctx.digest)
        if (package_copy / "imagebuild" / "fail").exists():
            (ctx.work / "half-written").write_bytes(b"x")
            raise ctx.fail("told to fail")
        raw = ctx.work / "disk.raw"
        raw.write_bytes(b"\0" * (1 << 20))
        return raw

    fake = Recipe(name="tiny", packages=("p",), files=("imagebuild/tiny.py",), assemble=assemble)
    monkeypatch.setitem(builder.RECIPES, "tiny", fake)
    monkeypatch.setattr(builder, "_preflight", lambda name: None)
    monkeypatch.setattr(builder, "_mirrors", lambda name, apt_dir: ["deb http://x/ bookworm main"])
    return built


@pytest.mark.qemu
def test_build_caches_by_recipe_hash(
    fake_recipe: list[str], package_copy: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    lines: list[str] = []
    first = builder.build("tiny", cache, package_dir=package_copy, progress=lines.append)
    assert first.name == f"tiny-{builder.recipe_hash('tiny', package_copy)}.qcow2"
    assert first.read_bytes()[:4] == b"QFI\xfb"
    assert (cache / "tiny.qcow2").resolve() == first
    assert builder.build("tiny", cache, package_dir=package_copy, progress=lines.append) == first
    assert len(fake_recipe) == 1 and any("cached" in line for line in lines)
    builder.build("tiny", cache, package_dir=package_copy, force=True, progress=lines.append)
    assert len(fake_recipe) == 2

    (package_copy / "imagebuild" / "tiny.py").write_text("# a new recipe\n")
    second = builder.build("tiny", cache, package_dir=package_copy, progress=lines.append)
    assert second != first and first.exists()  # the previous version is kept
    assert (cache / "tiny.qcow2").resolve() == second
    (package_copy / "imagebuild" / "tiny.py").write_text("# a newer recipe\n")
    third = builder.build("tiny", cache, package_dir=package_copy, progress=lines.append)
    assert not first.exists()  # the one before is pruned
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [".tiny.lock", second.name, third.name, "tiny.qcow2"]
    )
    assert (cache / "tiny.qcow2").resolve() == third


@pytest.mark.qemu
def test_failed_build_leaves_nothing_behind(
    fake_recipe: list[str], package_copy: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    (package_copy / "imagebuild" / "fail").write_text("")
    with pytest.raises(ImageBuildError, match="image tiny: start: told to fail"):
        builder.build("tiny", cache, package_dir=package_copy, progress=lambda line: None)
    assert sorted(p.name for p in cache.iterdir()) == [".tiny.lock"]


# --- the command line -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--cache-dir", "/c"], Path("/c")),
        (["--data-dir", "/d"], Path("/d/images/builtin")),
        (["--cache-dir", "/c", "--data-dir", "/d"], Path("/c")),
    ],
)
def test_cache_dir_from_arguments(argv: list[str], expected: Path) -> None:
    parser = argparse.ArgumentParser()
    image_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["image", "build", "tiny", *argv])
    assert image_cmd.cache_dir(args) == expected


def test_cache_dir_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "ucloud.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    args = argparse.Namespace(cache_dir=None, data_dir=None, config=str(config))
    assert image_cmd.cache_dir(args) == tmp_path / "data" / "images" / "builtin"


def test_mounts_under_finds_mounts_left_in_a_scratch_tree_deepest_first() -> None:
    mountinfo = (
        "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "90 22 0:5 / /c/.debian-build-x/root/proc rw - proc proc rw\n"
        "91 90 0:6 / /c/.debian-build-x/root/proc/sys/fs/binfmt_misc rw - binfmt binfmt rw\n"
        "92 22 0:7 /null /c/.debian-build-x/root/dev/null rw - devtmpfs udev rw\n"
        "93 22 0:8 / /c/.debian-build-xy rw - tmpfs tmpfs rw\n"
        "94 22 0:9 / /c/.debian-build-x/with\\040space rw - tmpfs tmpfs rw\n"
    )
    assert builder.mounts_under(mountinfo, "/c/.debian-build-x") == [
        "/c/.debian-build-x/root/proc/sys/fs/binfmt_misc",
        "/c/.debian-build-x/root/dev/null",
        "/c/.debian-build-x/root/proc",
        "/c/.debian-build-x/with space",
    ]
    assert builder.mounts_under(mountinfo, "/elsewhere") == []


def test_a_cache_dir_that_cannot_be_made_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cache_dir: .*/file/cache: Not a directory"):
        builder.build("tiny", tmp_path / "file" / "cache", progress=lambda line: None)


def test_preflight_names_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ImageBuildError, match="image debian: start: building images needs root"):
        builder._preflight("debian")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(builder, "missing_tools", lambda: ["mmdebstrap (mmdebstrap)"])
    with pytest.raises(ImageBuildError, match=r"missing mmdebstrap \(mmdebstrap\).*scripts/setup"):
        builder._preflight("debian")


@pytest.mark.parametrize(
    ("suffix", "pack"),
    [(".ko", bytes), (".ko.xz", lzma.compress), (".ko.gz", gzip.compress)],
)
def test_modules_reach_the_initramfs_uncompressed(
    tmp_path: Path, suffix: str, pack: Callable[[bytes], bytes]
) -> None:
    path = tmp_path / f"virtio_blk{suffix}"
    path.write_bytes(pack(b"\x7fELF module"))
    ctx = BuildContext("tiny", "0" * 12, tmp_path, [], tmp_path, lambda line: None)
    assert tiny.module_bytes(ctx, path) == b"\x7fELF module"
