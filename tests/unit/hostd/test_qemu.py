"""The QEMU command line, runtime directories, the accelerator choice, console chunks."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from ucloud.config import HostConfig, decode
from ucloud.errors import ConfigError, VmError
from ucloud.hostd.accel import Accelerator, Fingerprint, Probed, choose
from ucloud.hostd.console import read_chunk
from ucloud.hostd.qemu import Launch, RuntimeDir, TapNic, qemu_argv
from ucloud.listen import url_of

VM = "0192f3a4-0000-7000-8000-000000000001"


def launch(**fields: object) -> Launch:
    base: dict[str, object] = {
        "vm": VM, "directory": f"/run/vms/{VM}", "cpu": 2, "ram_mib": 512, "accel": "tcg",
        "cpu_model": "max",
    }
    return Launch(**{**base, **fields})  # type: ignore[arg-type]


def option(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_the_command_line_of_a_vm_without_nics() -> None:
    argv = qemu_argv("qemu-system-x86_64", launch(disks=(("-blockdev", "x", "-device", "y"),)))
    assert argv[0] == "qemu-system-x86_64"
    assert option(argv, "-accel") == ["tcg"] and option(argv, "-cpu") == ["max"]
    assert option(argv, "-smp") == ["2"] and option(argv, "-m") == ["512"]
    assert option(argv, "-uuid") == [VM]
    assert {"-daemonize", "-S", "-nodefaults"} <= set(argv)
    assert option(argv, "-pidfile") == [f"/run/vms/{VM}/qemu.pid"]
    chardevs = option(argv, "-chardev")
    assert f"socket,id=qmp,path=/run/vms/{VM}/qmp.sock,server=on,wait=off" in chardevs
    assert (
        f"socket,id=serial0,path=/run/vms/{VM}/serial.sock,server=on,wait=off,"
        f"logfile=/run/vms/{VM}/serial.log,logappend=on"
    ) in chardevs
    assert option(argv, "-serial") == ["chardev:serial0"]
    # the graphical console: a unix socket, never a TCP port
    assert option(argv, "-vnc") == [f"unix:/run/vms/{VM}/vnc.sock"]
    assert "VGA" in option(argv, "-device")
    assert option(argv, "-blockdev") == ["x"]
    assert "-netdev" not in argv and "-nic" not in argv  # no NIC: no network at all
    assert not any("user" in arg.split(",")[0] for arg in option(argv, "-netdev"))


def test_nics_are_taps_without_vhost() -> None:
    nics = (
        TapNic(tap="tapa0", mac="02:00:00:00:00:01"),
        TapNic(tap="tapa1", mac="02:00:00:00:00:02"),
    )
    argv = qemu_argv("qemu", launch(accel="kvm", nics=nics))
    assert option(argv, "-netdev") == [
        "tap,id=net0,ifname=tapa0,script=no,downscript=no,vhost=off",
        "tap,id=net1,ifname=tapa1,script=no,downscript=no,vhost=off",
    ]
    assert option(argv, "-device")[-2:] == [
        "virtio-net-pci,netdev=net0,mac=02:00:00:00:00:01",
        "virtio-net-pci,netdev=net1,mac=02:00:00:00:00:02",
    ]
    assert option(argv, "-cpu") != ["host"]


def test_commas_in_paths_are_escaped() -> None:
    argv = qemu_argv("qemu", launch(directory="/run/a,b"))
    assert "socket,id=qmp,path=/run/a,,b/qmp.sock,server=on,wait=off" in option(argv, "-chardev")


def test_a_runtime_directory_too_deep_for_a_unix_socket_is_refused(tmp_path: Path) -> None:
    RuntimeDir(Path("/var/lib/ucloud/vms"), VM).check()
    with pytest.raises(VmError, match="runtime_dir"):
        RuntimeDir(Path("/" + "d" * 80), VM).check()


def test_host_settings_refuse_cpu_host_and_bad_accelerators() -> None:
    named = decode({"host": {"cpu_model": "Skylake-Server-v4"}})
    assert named.host.cpu_model == "Skylake-Server-v4"
    with pytest.raises(ConfigError, match="host.cpu_model"):
        decode({"host": {"cpu_model": "host"}})
    with pytest.raises(ConfigError, match="host.accel"):
        decode({"host": {"accel": "hvf"}})
    with pytest.raises(ConfigError, match="host.stop_timeout_s"):
        decode({"host": {"stop_timeout_s": 0}})


FP = Fingerprint(kernel="6.1", qemu="/usr/bin/qemu-system-x86_64", cpu_model="max")


@pytest.mark.parametrize(
    ("configured", "device", "cached", "choice"),
    [
        ("tcg", True, None, "tcg"),
        ("kvm", False, None, "kvm"),
        ("auto", False, None, "tcg"),
        ("auto", True, None, "probe"),
        ("auto", True, Probed(accel="tcg", reason="r", fingerprint=FP), "tcg"),
        ("auto", True, Probed(accel="kvm", reason="r", fingerprint=FP), "kvm"),
        ("auto", True, Probed(accel="kvm", reason="r",
                              fingerprint=msgspec.structs.replace(FP, kernel="6.2")), "probe"),
    ],
)
def test_the_accelerator_choice(
    configured: str, device: bool, cached: Probed | None, choice: str
) -> None:
    assert choose(configured, device, cached, FP) == choice  # type: ignore[arg-type]


async def test_a_probe_runs_once_and_its_answer_is_cached(tmp_path: Path) -> None:
    probes = []

    async def probe() -> tuple[bool, str]:
        probes.append(1)
        return False, "the tiny guest said nothing"

    host = HostConfig(accel="auto")
    first = Accelerator(host, tmp_path, probe)
    if not Path("/dev/kvm").exists():
        assert await first.get() == "tcg" and probes == []
        return
    assert await first.get() == "tcg" and await first.get() == "tcg"
    again = Accelerator(host, tmp_path, probe)  # a restarted hostd reads the cache
    assert await again.get() == "tcg"
    assert len(probes) == 1
    cached = again.cached()
    assert cached is not None and cached.reason == "the tiny guest said nothing"


def test_console_chunks_follow_offsets_and_never_split_a_character(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"boot\r\nlogin: \xc3\xa9t\xc3")  # the last character is cut off
    whole = read_chunk(log, 0)
    assert (whole.offset, whole.next, whole.size) == (0, 16, 17)
    assert whole.data == "boot\r\nlogin: ét"
    with log.open("ab") as more:
        more.write(b"\xa9!")
    rest = read_chunk(log, whole.next)
    assert (rest.offset, rest.data, rest.next) == (16, "é!", 19)
    assert read_chunk(log, 19).data == "" and read_chunk(log, 500).offset == 19
    assert read_chunk(log, -3).data == "é!"
    assert read_chunk(log, 0, limit=4).data == "boot"


def test_the_console_url_of_an_unspecified_address_is_the_advertised_one() -> None:
    import socket

    sock = socket.socket(socket.AF_INET6)
    sock.bind(("::", 0))
    try:
        port = sock.getsockname()[1]
        assert url_of(sock, "2001:db8::1") == f"http://[2001:db8::1]:{port}"
        assert url_of(sock) == f"http://[::1]:{port}"
    finally:
        sock.close()
