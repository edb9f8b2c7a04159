"""Builds the built-in guest images (``tiny``, ``debian``) and keeps them in a cache.

Theory of operation: an image is a pure function of its recipe (the recipe's code and
data files, its package list and, for ``debian``, the ucloud-init program when the
repository has one) and of the Debian archive at build time. The recipe hash names the
result, ``<cache>/<name>-<hash>.qcow2``; ``<cache>/<name>.qcow2`` is a symlink to the
current one. A build runs only when that file is missing (or ``force``): under a lock
per name, in a scratch directory inside the cache, renamed into place at the very end,
so a failed or killed build leaves no partial image behind. Once the new one is in place,
older versions of the same image are removed, but for the most recent one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import ucloud
from ucloud.errors import ImageBuildError, InputError
from ucloud.imagebuild import debian, disk, sources, tiny
from ucloud.imagebuild.recipe import SUITE, BuildContext, Recipe, missing_tools

RECIPES: dict[str, Recipe] = {r.name: r for r in (tiny.RECIPE, debian.RECIPE)}
NAMES = tuple(RECIPES)
PACKAGE_DIR = Path(ucloud.__file__).parent
APT_DIR = Path("/etc/apt")
_HASH_CHARS = 12
_KEEP_OLD = 1  # older versions kept beside the current one


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise InputError(
            "image", f"no built-in image {name!r}; known: {', '.join(NAMES)}"
        ) from None


def recipe_inputs(name: str, package_dir: Path = PACKAGE_DIR) -> dict[str, bytes]:
    """What defines image ``name``: its package list and its files, by relative path."""
    r = recipe(name)
    inputs = {"(packages)": "\n".join(r.packages).encode()}
    for relative in r.files:
        inputs[relative] = (package_dir / relative).read_bytes()
    for relative in r.optional_files:
        path = package_dir / relative
        if path.is_file():
            inputs[relative] = path.read_bytes()
    return inputs


def recipe_hash(name: str, package_dir: Path = PACKAGE_DIR) -> str:
    """A short hex digest of ``recipe_inputs``: it names the cached image."""
    digest = hashlib.sha256(f"ucloud-image {name} {SUITE}\0".encode())
    for key, content in sorted(recipe_inputs(name, package_dir).items()):
        digest.update(f"{key}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()[:_HASH_CHARS]


def image_path(name: str, cache_dir: Path, package_dir: Path = PACKAGE_DIR) -> Path:
    """Where the current recipe's image is (or will be) cached."""
    return cache_dir / f"{name}-{recipe_hash(name, package_dir)}.qcow2"


def build(
    name: str,
    cache_dir: Path,
    *,
    force: bool = False,
    progress: Callable[[str], None] = print,
    package_dir: Path = PACKAGE_DIR,
    apt_dir: Path = APT_DIR,
) -> Path:
    """The cached qcow2 of image ``name``, built first if its recipe changed (or ``force``).

    Returns ``<cache_dir>/<name>-<recipe hash>.qcow2``; ``<cache_dir>/<name>.qcow2``
    points at it afterwards. Raises ImageBuildError naming the failed step.
    """
    r = recipe(name)
    final_digest = recipe_hash(name, package_dir)
    final = cache_dir / f"{name}-{final_digest}.qcow2"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = _locked(cache_dir / f".{name}.lock")
    except OSError as exc:
        raise InputError("cache_dir", f"{cache_dir}: {exc.strerror or exc}") from exc
    with lock:
        if final.is_file() and not force:
            progress(f"{name}: cached {final.name}")
        else:
            _build(r, final_digest, final, progress, package_dir, apt_dir)
        _point(cache_dir / f"{name}.qcow2", final)
        _prune(cache_dir, name, keep=final)
    return final


def _build(
    r: Recipe,
    digest: str,
    final: Path,
    progress: Callable[[str], None],
    package_dir: Path,
    apt_dir: Path,
) -> None:
    _preflight(r.name)
    mirrors = _mirrors(r.name, apt_dir)
    _remove_scratch(final.parent, r.name)
    work = Path(tempfile.mkdtemp(prefix=f".{r.name}-build-", dir=final.parent))
    ctx = BuildContext(r.name, digest, work, mirrors, package_dir, progress)
    try:
        raw = r.assemble(ctx)
        partial = work / "image.qcow2"
        disk.to_qcow2(ctx, raw, partial)
        os.replace(partial, final)
        ctx.step(f"done: {final}")
    except OSError as exc:  # a full disk, a file that vanished: name the step it broke
        raise ctx.fail(str(exc)) from exc
    finally:
        remove_tree(work)


def machine_mirrors(apt_dir: Path = APT_DIR) -> list[str]:
    """mmdebstrap mirror lines for the image suite, from this machine's apt sources."""
    found: list[sources.Source] = []
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if path.is_file():
            found += sources.parse_one_line(path.read_text())
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        found += sources.parse_deb822(path.read_text())
    return sources.mirror_lines(found, SUITE)


def _mirrors(name: str, apt_dir: Path) -> list[str]:
    try:
        return machine_mirrors(apt_dir)
    except (sources.SourcesError, OSError) as exc:
        raise ImageBuildError(name, "reading the apt sources", str(exc)) from exc


def _preflight(name: str) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError(
            name, "start", "building images needs root (mmdebstrap, root-owned files, chroot)"
        )
    missing = missing_tools()
    if not (disk.GRUB_DIR / "boot.img").is_file():
        missing.append(f"{disk.GRUB_DIR}/boot.img (grub-pc-bin)")
    if missing:
        raise ImageBuildError(
            name, "start", f"missing {', '.join(missing)}: run scripts/setup to install them"
        )


def _locked(path: Path) -> AbstractContextManager[None]:
    """An exclusive lock on ``path``; opening it fails here (OSError), not on entering."""
    handle = path.open("a")

    @contextmanager
    def held() -> Iterator[None]:
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    return held()


def _remove_scratch(cache_dir: Path, name: str) -> None:
    """Scratch directories of builds that were killed (we hold the name's lock)."""
    for stale in cache_dir.glob(f".{name}-build-*"):
        remove_tree(stale)


def remove_tree(path: Path) -> None:
    """Delete a scratch tree, never through a mount left in it by a killed mmdebstrap.

    mmdebstrap mounts /proc, /sys and device nodes into the tree while it runs; deleting
    through such a mount would delete the machine's own files. Mounts found are detached
    (``umount --lazy``); if any remain, the tree is left alone.
    """
    mounts = mounts_under(Path("/proc/self/mountinfo").read_text(), str(path))
    for mount in mounts:
        subprocess.run(["umount", "--lazy", mount], capture_output=True, check=False)
    if mounts and mounts_under(Path("/proc/self/mountinfo").read_text(), str(path)):
        return
    shutil.rmtree(path, ignore_errors=True)


def mounts_under(mountinfo: str, path: str) -> list[str]:
    """Mount points at or below ``path`` in /proc/self/mountinfo text, deepest first."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        if point == path or point.startswith(path.rstrip("/") + "/"):
            found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def _point(link: Path, target: Path) -> None:
    if link.is_symlink() and os.readlink(link) == target.name:
        return
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.name)
    os.replace(tmp, link)


def _prune(cache_dir: Path, name: str, keep: Path) -> None:
    """Remove older versions of ``name`` but the newest ``_KEEP_OLD`` (by modification time).

    Two checkouts sharing one cache (a clone under test beside a working tree) each keep
    their version instead of rebuilding in turn.
    """
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{{_HASH_CHARS}}}\.qcow2")
    older = [p for p in cache_dir.iterdir() if p != keep and pattern.fullmatch(p.name)]
    older.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in older[_KEEP_OLD:]:
        old.unlink(missing_ok=True)
