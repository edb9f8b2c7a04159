#!/usr/bin/python3 -IS
"""A hollow QEMU, for load tests only: a VM that runs without a guest.

Set a host's ``[host] qemu`` to this file (and ``accel = "tcg"``, so that no KVM probe
boots a guest) and hostd's ``QemuProcess`` drives it as it drives QEMU: it is started with
QEMU's command line, daemonizes once its QMP socket listens, writes the pid file, and its
command line names the QMP socket (which is how hostd recognises the QEMU of a VM). Over
QMP it greets, answers ``query-status`` (paused after ``-S`` until ``cont``), ``stop``,
``quit`` and ``system_powerdown`` (both end it, removing the pid file as QEMU does), and
``query-blockstats``/``query-migrate`` with empty answers; anything else is a
``CommandNotFound`` error. SIGKILL leaves it dead with its pid file behind, like QEMU.

It is what Kubernetes' kubemark calls a hollow node: the control plane sees hosts full of
running VMs while the machine carries one small idle process per VM. Standard library
only (it runs under the system's Python, isolated from any virtual environment).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

GREETING = {"QMP": {"version": {"qemu": {"major": 9, "minor": 0, "micro": 0},
                                "package": "hollow"}, "capabilities": []}}  # fmt: skip


def option(argv: list[str], name: str) -> str | None:
    """The value after ``name`` in ``argv``, or None."""
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def qmp_path(argv: list[str]) -> str:
    """The QMP socket's path, from ``-chardev socket,id=qmp,path=...`` (commas doubled)."""
    for index, arg in enumerate(argv[:-1]):
        value = argv[index + 1]
        if arg == "-chardev" and value.startswith("socket,id=qmp,"):
            rest = value.replace(",,", "\0").split(",")
            for part in rest:
                if part.startswith("path="):
                    return part[len("path="):].replace("\0", ",")
    raise SystemExit("hollow qemu: no QMP socket (-chardev socket,id=qmp,path=...)")


class Guest:
    """The pretend machine: its run state and how it ends."""

    def __init__(self, pidfile: str | None, paused: bool) -> None:
        self.pidfile = pidfile
        self.status = "paused" if paused else "running"

    def end(self) -> None:
        if self.pidfile:
            Path(self.pidfile).unlink(missing_ok=True)
        os._exit(0)

    def answer(self, command: str) -> tuple[Any, list[str]]:
        """The ``return`` of ``command`` and the events it emits, or raise KeyError."""
        if command == "qmp_capabilities":
            return {}, []
        if command == "query-status":
            return {"status": self.status, "running": self.status == "running",
                    "singlestep": False}, []  # fmt: skip
        if command == "cont":
            self.status = "running"
            return {}, ["RESUME"]
        if command == "stop":
            self.status = "paused"
            return {}, ["STOP"]
        if command in ("quit", "system_powerdown"):
            return {}, ["POWERDOWN", "SHUTDOWN"] if command == "system_powerdown" else []
        if command == "query-blockstats":
            return [], []
        if command == "query-migrate":
            return {}, []
        raise KeyError(command)


def requests(connection: socket.socket) -> Iterator[dict[str, Any]]:
    """The JSON objects the client sends, as QEMU's streaming parser reads them (no
    newline between them is needed)."""
    decoder = json.JSONDecoder()
    buffer = ""
    while chunk := connection.recv(65536):
        buffer += chunk.decode(errors="replace")
        while buffer.strip():
            try:
                request, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break  # an incomplete object: read on
            buffer = buffer.lstrip()[end:]
            if isinstance(request, dict):
                yield request


def serve(listener: socket.socket, guest: Guest) -> None:
    """One QMP client at a time, until ``quit`` or ``system_powerdown``."""
    while True:
        connection, _ = listener.accept()
        with connection:
            connection.sendall(_line(GREETING))
            for request in requests(connection):
                command = request.get("execute", "")
                reply: dict[str, Any]
                try:
                    result, events = guest.answer(command)
                    reply = {"return": result}
                except KeyError:
                    events = []
                    reply = {"error": {"class": "CommandNotFound",
                                       "desc": f"The command {command} has not been found"}}
                if "id" in request:
                    reply["id"] = request["id"]
                out = _line(reply) + b"".join(_line({"event": event, "data": {}, "timestamp": {
                    "seconds": 0, "microseconds": 0}}) for event in events)  # fmt: skip
                with contextlib.suppress(OSError):
                    connection.sendall(out)
                if command in ("quit", "system_powerdown"):
                    guest.end()


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\r\n"


def _write_pid(pidfile: str | None, pid: int) -> None:
    if pidfile:
        tmp = f"{pidfile}.tmp"
        Path(tmp).write_text(f"{pid}\n")
        os.replace(tmp, pidfile)


def main(argv: list[str]) -> None:
    if "-version" in argv or "--version" in argv:
        print("QEMU emulator version 9.0.0 (hollow)")
        return
    path = qmp_path(argv)
    pidfile = option(argv, "-pidfile")
    guest = Guest(pidfile, paused="-S" in argv or "-incoming" in argv)
    Path(path).unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    if "-daemonize" in argv:
        if os.fork() > 0:  # the parent returns once the child is set up, as QEMU does
            _, status = os.wait()
            os._exit(os.waitstatus_to_exitcode(status))
        os.setsid()
        child = os.fork()
        if child > 0:  # the pid file names the daemon before the caller may read it
            _write_pid(pidfile, child)
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
    else:
        _write_pid(pidfile, os.getpid())
    signal.signal(signal.SIGTERM, lambda *_: guest.end())
    signal.signal(signal.SIGINT, lambda *_: guest.end())
    serve(listener, guest)


if __name__ == "__main__":
    main(sys.argv[1:])
