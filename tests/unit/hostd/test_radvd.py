"""What radvd is told to advertise, and the supervisor's backoff (no process started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ucloud.hostd.radvd import RadvdSupervisor, _Daemon, radvd_conf


@pytest.mark.parametrize(
    ("rdnss", "router", "expected"),
    [
        ([], False, [
            "interface br7 {", "\tAdvSendAdvert on;", "\tMinRtrAdvInterval 10;",
            "\tMaxRtrAdvInterval 30;", "\tAdvDefaultLifetime 0;", "\tAdvLinkMTU 1500;",
            "\tprefix fd00:7::/64 {", "\t\tAdvOnLink on;", "\t\tAdvAutonomous on;", "\t};",
            "};",
        ]),
        (["fd00::53", "fd00::54"], True, [
            "interface br7 {", "\tAdvSendAdvert on;", "\tMinRtrAdvInterval 10;",
            "\tMaxRtrAdvInterval 30;", "\tAdvDefaultLifetime 1800;", "\tAdvLinkMTU 1500;",
            "\tprefix fd00:7::/64 {", "\t\tAdvOnLink on;", "\t\tAdvAutonomous on;", "\t};",
            "\tRDNSS fd00::53 fd00::54 {", "\t};", "};",
        ]),
    ],
)
def test_the_advert_of_a_network(rdnss: list[str], router: bool, expected: list[str]) -> None:
    text = radvd_conf("br7", "fd00:7::/64", mtu=1500, rdnss=rdnss, default_router=router)
    assert text.splitlines() == expected


def test_a_dead_radvd_comes_back_after_a_doubling_backoff(tmp_path: Path) -> None:
    supervisor = RadvdSupervisor(tmp_path, binary="/nonexistent/radvd")
    started: list[float] = []

    def start(daemon: _Daemon, now: float) -> None:  # as the real one, without a process
        started.append(now)
        daemon.started, daemon.reported = now, False

    supervisor._start = start  # type: ignore[method-assign]
    supervisor._alive = lambda daemon: False  # type: ignore[method-assign]  # dies at once
    supervisor.daemons[7] = _Daemon(7, started=0.0)
    for now in (1.0, 1.9, 2.0, 2.5, 4.4, 4.5, 5.0, 8.9, 9.0):
        supervisor.check(now)
    assert started == [2.0, 4.5, 9.0]  # after 1 s, 2 s, 4 s
    supervisor.check(100.0)  # reported dead at 100 after running 91 s: a fresh count
    assert supervisor.daemons[7].next_start == 101.0
