"""What hostd's per-VM metrics read from /proc: CPU time and the taps of a QEMU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ucloud.hostd.metrics import cpu_seconds, taps_of


@pytest.mark.parametrize(
    ("stat", "seconds"),
    [
        ("4242 (qemu-system-x86) S 1 2 3 0 -1 4 5 6 7 8 250 150 0 0 20 0 3 0", 4.0),
        ("7 (a (b) c) R 1 2 3 0 -1 4 5 6 7 8 100 0 0 0 20 0 1 0", 1.0),  # spaces, parens
    ],
)
def test_cpu_time_is_user_plus_system(stat: str, seconds: float) -> None:
    assert cpu_seconds(stat, 100) == seconds


def test_cpu_time_of_this_process() -> None:
    text = Path(f"/proc/{os.getpid()}/stat").read_text()
    assert cpu_seconds(text, os.sysconf("SC_CLK_TCK")) > 0


def test_taps_come_from_the_netdev_arguments() -> None:
    argv = [
        "qemu-system-x86_64", "-name", "vm,ifname=nottap", "-netdev",
        "tap,id=net0,ifname=tapabc0,script=no,downscript=no,vhost=off", "-netdev",
        "tap,id=net1,ifname=tapabc1,script=no", "-device", "virtio-net-pci,netdev=net0",
    ]
    assert taps_of("\0".join(argv).encode() + b"\0") == ["tapabc0", "tapabc1"]
    assert taps_of(b"qemu\0-nic\0none\0") == []
