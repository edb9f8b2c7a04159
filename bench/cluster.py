"""How long the clustered shape takes to start from nothing and to go away again.

``python -m bench.cluster [--hosts N] [--runs R]`` (root: network namespaces) starts the
test suite's cluster harness (``tests.cluster.Cluster``: three control nodes with a
JetStream cluster and a 3-member etcd, the services as ``ucloud serve`` processes, N
hosts) R times and prints, per run, the seconds until every process said READY=1 and
every host registered, and the seconds its removal took.
"""

from __future__ import annotations

import argparse
import statistics

from bench.common import Stopwatch, report
from tests.cluster import Cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2, help="hypervisor hosts (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="starts to measure (default 3)")
    args = parser.parse_args()
    starts, stops = [], []
    for run in range(1, args.runs + 1):
        cluster = Cluster(args.hosts)
        with cluster:
            starts.append(cluster.started_in_s)
            processes = len(cluster.processes)
            stopping = Stopwatch()
        stops.append(stopping.seconds)
        print(f"run {run}: {processes} service processes and 6 servers up in "
              f"{starts[-1]:.1f}s, removed in {stops[-1]:.1f}s", flush=True)  # fmt: skip
    report({
        "hosts": args.hosts, "runs": args.runs,
        "start_s_median": round(statistics.median(starts), 2),
        "start_s_max": round(max(starts), 2),
        "stop_s_median": round(statistics.median(stops), 2),
    })  # fmt: skip


if __name__ == "__main__":
    main()
