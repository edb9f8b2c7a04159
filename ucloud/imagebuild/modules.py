"""Kernel modules for the tiny image: which files to load, in which order.

Theory of operation: ``depmod`` writes ``modules.dep``, one line per module file with the
files it needs (``kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko ...``),
and ``modules.builtin`` lists what is compiled into the kernel. Busybox ``insmod`` loads one
file and resolves nothing, so the image carries the wanted modules and their dependencies
as plain files and loads them in an order where every module comes after all it needs.
Pure: text in, names out; no file is read here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


class ModuleError(ValueError):
    """A wanted module is unknown, or modules.dep is malformed or cyclic."""


@dataclass(frozen=True)
class Module:
    name: str  # the kernel's name: basename without suffix, "-" as "_"
    path: str  # relative to /lib/modules/<version>/


def module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    else:
        raise ModuleError(f"{path!r} is not a kernel module file")
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[Module, tuple[str, ...]]]:
    """``name -> (module, names it depends on)`` from the text of modules.dep."""
    table: dict[str, tuple[Module, tuple[str, ...]]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        head, sep, tail = line.partition(":")
        if not sep:
            raise ModuleError(f"modules.dep line {number}: no ':' in {line!r}")
        path = head.strip()
        module = Module(module_name(path), path)
        table[module.name] = (module, tuple(module_name(dep) for dep in tail.split()))
    return table


def builtin_names(text: str) -> frozenset[str]:
    """Module names compiled into the kernel, from the text of modules.builtin."""
    return frozenset(module_name(line.strip()) for line in text.splitlines() if line.strip())


def load_order(
    wanted: Iterable[str],
    deps: Mapping[str, tuple[Module, tuple[str, ...]]],
    builtin: frozenset[str] = frozenset(),
) -> list[Module]:
    """The wanted modules and everything they need, each after its dependencies.

    Built-in modules are left out; a wanted module that is neither a file nor built in
    is an error, as is a dependency cycle. The order is stable: wanted order first,
    dependencies in the order modules.dep lists them.
    """
    order: list[Module] = []
    done: set[str] = set()
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            raise ModuleError(f"dependency cycle: {cycle}")
        entry = deps.get(name)
        if entry is None:
            raise ModuleError(f"module {name!r} is neither in modules.dep nor built in")
        module, needs = entry
        visiting.append(name)
        for dep in needs:
            visit(dep)
        visiting.pop()
        done.add(name)
        order.append(module)

    for raw in wanted:
        name = raw.replace("-", "_")
        if name in builtin and name not in deps:
            continue
        visit(name)
    return order
