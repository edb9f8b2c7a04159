"""QEMU for hostd: a VM's runtime directory, its command line, and the process itself.

A VM's runtime directory (``<host.runtime_dir>/<vm id>/``) holds everything that lets a
QEMU outlive the hostd that started it::

    qmp.sock     the QMP socket (one client at a time: the current hostd)
    qemu.pid     QEMU's pid file (written by QEMU, removed by QEMU when it exits cleanly)
    serial.sock  the serial console, a socket QEMU listens on (one client at a time:
                 hostd's console hub, which shares it between viewers)
    serial.log   what the serial console printed, appended to across restarts (QEMU
                 writes it whether or not anyone is attached)
    vnc.sock     the graphical console (VNC, several clients), of a ``VGA`` device
    qemu.log     what QEMU printed while starting
    vm.json      what hostd started it with (``StartSpec``)

``qemu_argv`` is the whole command line, a pure function of a ``Launch``. QEMU starts
daemonized (``-daemonize``: it returns once the machine is set up, in a session of its
own, so that signals to hostd's process group never reach it) and paused (``-S``): hostd
connects to QMP first and then sends ``cont``, so no event of the guest goes unseen. The
QEMU that receives a live migration starts with ``-incoming defer`` instead: it waits for
QMP ``migrate-incoming`` and runs the guest the moment the migration completes.
Never ``-cpu host`` (a named model), never user-mode networking: a NIC is a tap with
``vhost=off``, or there is none. Never a TCP port for a console: the serial and VNC
sockets are unix sockets, reachable only through hostd (``secure``: mode 0600 in a
directory of mode 0700).

``Qemu`` is the small interface hostd uses; ``QemuProcess`` is its one implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import msgspec

from ucloud.errors import VmError
from ucloud.events.types import NicNetwork, Resolved, StoreKind, VmSpec, spec_fields

Accel = Literal["kvm", "tcg"]
MACHINE = "q35"
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL
LAUNCH_TIMEOUT_S = 60.0


class StartSpec(VmSpec, frozen=True, kw_only=True):
    """What a VM is started with (its ``vm.json``): the VM's spec, its image's store and its
    NICs' networks, all that a stop, a restart or a delete needs of it later.

    ``networks`` is None in a ``vm.json`` written before it was kept (and while the spec is
    not resolved yet): the networks are then read from the log.
    """

    store: StoreKind = "fs"
    networks: tuple[NicNetwork, ...] | None = None

    @classmethod
    def of(cls, vm: VmSpec, resolved: Resolved | None = None) -> StartSpec:
        if resolved is None:
            return cls(**spec_fields(vm))
        return cls(**spec_fields(vm), store=resolved.store, networks=resolved.networks)


class TapNic(msgspec.Struct, frozen=True, kw_only=True):
    tap: str
    mac: str


class Launch(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``qemu_argv`` needs."""

    vm: str
    directory: str
    cpu: int
    ram_mib: int
    accel: Accel
    cpu_model: str
    disks: tuple[tuple[str, ...], ...] = ()  # QEMU arguments per disk, from the image store
    nics: tuple[TapNic, ...] = ()
    incoming: bool = False  # receive a live migration (``-incoming defer``), not boot


class RuntimeDir:
    """The paths of one VM's runtime directory."""

    def __init__(self, root: Path, vm: str) -> None:
        self.vm = vm
        self.path = root.absolute() / vm
        self.qmp = self.path / "qmp.sock"
        self.serial_sock = self.path / "serial.sock"
        self.vnc = self.path / "vnc.sock"
        self.pidfile = self.path / "qemu.pid"
        self.serial = self.path / "serial.log"
        self.qemu_log = self.path / "qemu.log"
        self.spec = self.path / "vm.json"

    def check(self) -> None:
        """VmError when a socket's path is too long for a unix socket."""
        longest = max((self.qmp, self.serial_sock, self.vnc), key=lambda p: len(os.fsencode(p)))
        if len(os.fsencode(longest)) > UNIX_PATH_MAX:
            raise VmError(
                self.vm, "runtime directory",
                f"{longest} is longer than a unix socket path may be ({UNIX_PATH_MAX} "
                "bytes); choose a shorter host.runtime_dir",
            )

    def make(self) -> None:
        """The directory, of mode 0700 (also when an older hostd made it 0750)."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.chmod(0o700)

    def secure(self) -> None:
        """The console sockets QEMU made: mode 0600, whatever the umask was."""
        for sock in (self.serial_sock, self.vnc):
            with contextlib.suppress(FileNotFoundError):
                sock.chmod(0o600)

    def write_spec(self, spec: StartSpec) -> None:
        self.make()
        tmp = self.spec.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(spec))
        tmp.replace(self.spec)

    def read_spec(self) -> StartSpec | None:
        try:
            return msgspec.json.decode(self.spec.read_bytes(), type=StartSpec)
        except (OSError, msgspec.DecodeError):
            return None


SMBIOS_PRODUCT = "OpenStack Nova"


def qemu_argv(binary: str, launch: Launch) -> list[str]:
    """The command line that starts ``launch`` (pure)."""
    directory = Path(launch.directory)
    qmp, serial = directory / "qmp.sock", directory / "serial.log"
    serial_sock, vnc = directory / "serial.sock", directory / "vnc.sock"
    argv = [
        binary,
        "-name", f"guest={_escape(launch.vm)},debug-threads=on",
        "-uuid", launch.vm,
        # stock cloud-init takes a VM for OpenStack by this name, then reads our metadata
        "-smbios", f"type=1,manufacturer=ucloud,product={SMBIOS_PRODUCT}",
        "-machine", MACHINE,
        "-accel", launch.accel,
        "-cpu", launch.cpu_model,
        "-smp", str(launch.cpu),
        "-m", str(launch.ram_mib),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-vnc", f"unix:{_escape(str(vnc))}",
        "-device", "VGA",
        "-daemonize", "-pidfile", str(directory / "qemu.pid"),
        "-chardev", f"socket,id=qmp,path={_escape(str(qmp))},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev",
        f"socket,id=serial0,path={_escape(str(serial_sock))},server=on,wait=off,"
        f"logfile={_escape(str(serial))},logappend=on",
        "-serial", "chardev:serial0",
        "-device", "virtio-rng-pci",
        *(["-incoming", "defer"] if launch.incoming else ["-S"]),
    ]  # fmt: skip
    for disk in launch.disks:
        argv += disk
    for index, nic in enumerate(launch.nics):
        argv += [
            "-netdev",
            f"tap,id=net{index},ifname={nic.tap},script=no,downscript=no,vhost=off",
            "-device", f"virtio-net-pci,netdev=net{index},mac={nic.mac}",
        ]  # fmt: skip
    return argv


def _escape(value: str) -> str:
    """A value inside a QEMU option list: commas doubled."""
    return value.replace(",", ",,")


class Qemu(Protocol):
    """The QEMU processes of this host, found by their runtime directories."""

    async def launch(self, argv: Sequence[str], runtime: RuntimeDir) -> int:
        """Start QEMU daemonized; its pid once it is set up. VmError naming QEMU's complaint."""
        ...

    def pid(self, runtime: RuntimeDir) -> int | None:
        """The pid of the live QEMU of ``runtime``, or None."""
        ...

    def kill(self, runtime: RuntimeDir) -> None:
        """SIGKILL the QEMU of ``runtime`` (by its pid file), if it lives."""
        ...

    async def wait_gone(self, runtime: RuntimeDir, timeout: float) -> bool:
        """Whether the QEMU of ``runtime`` is gone within ``timeout`` seconds."""
        ...


class QemuProcess:
    """Real QEMU processes: launched with ``-daemonize``, found by pid file and command line."""

    async def launch(self, argv: Sequence[str], runtime: RuntimeDir) -> int:
        runtime.check()
        runtime.make()
        runtime.pidfile.unlink(missing_ok=True)
        with runtime.qemu_log.open("ab") as errors:
            start = errors.tell()
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=errors, stderr=errors,
                    start_new_session=True, cwd=runtime.path,
                )
            except OSError as exc:
                raise VmError(runtime.vm, "launch", f"cannot run {argv[0]}: {exc}") from exc
            try:
                async with asyncio.timeout(LAUNCH_TIMEOUT_S):
                    code = await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
                code = -1
        if code != 0:
            raise VmError(runtime.vm, "launch", f"QEMU exited {code}: {_tail(runtime, start)}")
        pid = self.pid(runtime)
        if pid is None:
            raise VmError(runtime.vm, "launch", f"QEMU did not stay up: {_tail(runtime, start)}")
        runtime.secure()
        return pid

    def pid(self, runtime: RuntimeDir) -> int | None:
        try:
            pid = int(runtime.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _is_qemu_of(pid, runtime) else None

    def kill(self, runtime: RuntimeDir) -> None:
        pid = self.pid(runtime)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def wait_gone(self, runtime: RuntimeDir, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pid(runtime) is not None:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True


def _is_qemu_of(pid: int, runtime: RuntimeDir) -> bool:
    """Whether ``pid`` lives and is the QEMU of this runtime directory. A pid reused by
    another process, or a zombie (empty command line), is not."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    needle = os.fsencode(runtime.qmp)
    return any(needle in arg for arg in argv)


def _tail(runtime: RuntimeDir, start: int) -> str:
    try:
        with runtime.qemu_log.open("rb") as log:
            log.seek(start)
            text = log.read().decode(errors="replace").strip()
    except OSError:
        text = ""
    return " ".join(text.splitlines()[-3:])[-500:] or "(nothing on stderr)"
