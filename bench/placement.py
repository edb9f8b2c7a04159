"""Pure placement decisions per second at 1,000 hosts (target >= 50,000/s).

Hosts of three sizes, half full on average; requests of mixed sizes. Measures
``place()`` alone for both policies, and ``place()`` followed by folding the placement
into the ledger (what a scheduler does per VM). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime

from ucloud import events as ev
from ucloud.events import Resources
from ucloud.handlers.placement import (
    CapacityLedger,
    HostCapacity,
    NoCapacity,
    Placement,
    Policy,
    evolve,
    place,
)

AT = datetime(2026, 1, 1, tzinfo=UTC)
SIZES = [
    Resources(cpu=16, ram_mib=65536, ssd_mib=1_000_000),
    Resources(cpu=32, ram_mib=131072, ssd_mib=2_000_000, hdd_mib=8_000_000),
    Resources(cpu=64, ram_mib=262144, ssd_mib=4_000_000),
]
FLAVOURS = [
    Resources(cpu=1, ram_mib=1024, ssd_mib=10_240),
    Resources(cpu=2, ram_mib=4096, ssd_mib=20_480),
    Resources(cpu=4, ram_mib=8192, ssd_mib=40_960),
    Resources(cpu=8, ram_mib=32768, ssd_mib=81_920, hdd_mib=100_000),
]


def cluster(hosts: int, rng: random.Random) -> CapacityLedger:
    views = []
    for number in range(hosts):
        capacity = rng.choice(SIZES)
        fill = rng.random()
        used = Resources(
            cpu=int(capacity.cpu * fill),
            ram_mib=int(capacity.ram_mib * fill),
            ssd_mib=int(capacity.ssd_mib * fill),
            hdd_mib=int(capacity.hdd_mib * fill),
        )
        views.append(
            HostCapacity(
                id=f"host{number:05d}", capacity=capacity, used=used,
                drained=rng.random() < 0.02, up=rng.random() > 0.01, seq=number + 1,
            )
        )
    return CapacityLedger.of(views, position=hosts)


def decisions_per_second(ledger: CapacityLedger, policy: Policy, count: int) -> tuple[float, int]:
    rng = random.Random(7)
    requests = [rng.choice(FLAVOURS) for _ in range(count)]
    failed = 0
    start = time.perf_counter()
    for request in requests:
        if isinstance(place(request, ledger, policy), NoCapacity):
            failed += 1
    return count / (time.perf_counter() - start), failed


def with_folding(ledger: CapacityLedger, policy: Policy, count: int) -> tuple[float, int]:
    rng = random.Random(11)
    requests = [rng.choice(FLAVOURS) for _ in range(count)]
    placed = 0
    seq = ledger.position
    start = time.perf_counter()
    for number, request in enumerate(requests):
        outcome = place(request, ledger, policy)
        if isinstance(outcome, Placement):
            seq += 1
            event = ev.HostVmPlaced(
                id=f"p{number}", at=AT, actor="bench", host=outcome.host, vm=f"vm{number}",
                resources=request,
            )
            ledger = evolve(ledger, [(seq, event)])
            placed += 1
    return count / (time.perf_counter() - start), placed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=100_000)
    args = parser.parse_args()
    ledger = cluster(args.hosts, random.Random(1))
    result: dict[str, object] = {"bench": "placement", "hosts": args.hosts}
    for policy in ("pack", "spread"):
        rate, failed = decisions_per_second(ledger, policy, args.decisions)
        print(f"{policy}: {rate:,.0f} decisions/s ({failed} of {args.decisions} found no host)")
        result[f"{policy}_per_s"] = round(rate)
    folding, placed = with_folding(ledger, "spread", min(args.decisions, 20_000))
    print(f"spread with folding each placement in: {folding:,.0f} decisions/s ({placed} placed)")
    result["spread_with_evolve_per_s"] = round(folding)
    result["target_per_s"] = 50_000
    result["ok"] = min(result["pack_per_s"], result["spread_per_s"]) >= 50_000  # type: ignore[call-overload]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
