"""The exposition: prometheus-client's text, integral values (stream sequences) as integers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from ucloud.consumer import counters
from ucloud.metrics import SCHEDULER_CONFLICTS, ProcessMetrics, exposition


def parsed(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1_234_567, "1234567"),
        (0, "0"),
        (7, "7"),
        (2**53 - 1, "9007199254740991"),
        (1.5, "1.5"),
        (0.25, "0.25"),
        (float("inf"), "+Inf"),
    ],
)
def test_a_value_is_written_exactly(value: float, text: str) -> None:
    family = GaugeMetricFamily("ucloud_stream_last_sequence", "Last sequence.", value=value)
    written = exposition([family]).decode()
    assert written.splitlines()[-1] == f"ucloud_stream_last_sequence {text}"
    [(_, read)] = parsed(written)["ucloud_stream_last_sequence"]
    assert read == value
    assert isinstance(read, int) == (isinstance(value, int))  # the parser reads integers


def test_label_values_with_spaces_keep_their_sample_value() -> None:
    family = GaugeMetricFamily("ucloud_x", "x", labels=["why"])
    family.add_metric(["no room at 1 host"], 1_234_567)
    written = exposition([family]).decode()
    assert 'ucloud_x{why="no room at 1 host"} 1234567' in written.splitlines()


async def test_the_process_registry_exports_consumer_and_scheduler_counters() -> None:
    counters("test-metrics-durable").processed += 1_234_567
    SCHEDULER_CONFLICTS.labels("host").inc()
    metrics = ProcessMetrics()

    async def slow() -> Iterable[Metric]:
        await asyncio.sleep(60)
        return []

    async def broken() -> Iterable[Metric]:
        raise RuntimeError("no answer")

    async def sequence() -> Iterable[Metric]:
        return [GaugeMetricFamily("ucloud_stream_last_sequence", "s", value=1_234_567)]

    with (
        metrics.gathering(broken),
        metrics.gathering(sequence),
        pytest.MonkeyPatch.context() as patch,
    ):
        patch.setattr("ucloud.metrics.GATHER_TIMEOUT_S", 0.05)
        with metrics.gathering(slow):
            text = (await metrics.render()).decode()
    assert "ucloud_consumer_processed_total{durable=\"test-metrics-durable\"} 1234567" in text
    families = parsed(text)
    assert families["ucloud_stream_last_sequence"] == [({}, 1_234_567)]
    assert families["ucloud_scheduler_conflicts"][0][0] == {"on": "host"}
    assert "process_cpu_seconds" in families
    later = parsed((await metrics.render()).decode())
    assert "ucloud_stream_last_sequence" not in later  # gone with its block
