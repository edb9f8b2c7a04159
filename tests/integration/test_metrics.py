"""Every process's /metrics, scraped over HTTP and parsed as Prometheus text.

``ucloud up`` runs as a real process (its /metrics address is in up.json) and so does a
``ucloud serve projector`` beside it with ``metrics.listen`` set; each answer must parse
with prometheus-client's parser and show stream sequences as the integers they are.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_up import Up, _stop_strays, ucloud, uploaded
from ucloud import events as ev
from ucloud.config import NatsConfig
from ucloud.eventlog import EventLog
from ucloud.ids import new_id
from ucloud.servers import free_port

Samples = dict[str, list[tuple[dict[str, str], float]]]
WAIT_S = 60.0


def parse(text: str) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def one(samples: Samples, name: str, **labels: str) -> float:
    values = [v for found, v in samples.get(name, []) if labels.items() <= found.items()]
    assert len(values) == 1, f"{name}{labels}: {values} in {sorted(samples)}"
    return values[0]


async def scrape(url: str) -> tuple[str, Samples]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(url)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text, parse(answer.text)


async def until(url: str, done: object, what: str) -> tuple[str, Samples]:
    deadline = time.monotonic() + WAIT_S
    while True:
        text, samples = await scrape(url)
        try:
            if done(samples):  # type: ignore[operator]
                return text, samples
        except AssertionError:
            pass
        assert time.monotonic() < deadline, f"never {what}:\n{text}"
        await asyncio.sleep(0.2)


def unplaceable(owner: str) -> ev.VmRequested:
    """A VM no host can take: the scheduler decides 'failed' without starting anything."""
    return ev.VmRequested(
        id=new_id(), at=datetime.now(UTC), actor=owner, causation="", correlation="",
        vm=new_id(), owner=owner, name="huge", image=new_id(),
        spec=ev.Resources(cpu=4096, ram_mib=1 << 40, ssd_mib=1),
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "aio"
    _stop_strays(tmp_path / "aio")


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_every_metrics_endpoint_parses_and_counts_in_integers(data_dir: Path) -> None:
    up = Up(data_dir)
    serve: subprocess.Popen[bytes] | None = None
    errors = (data_dir.parent / "serve.stderr").open("ab")
    try:
        assert up.info.metrics.startswith("http://[::1]:") and up.info.metrics in (
            data_dir / "up.json"
        ).read_text()
        log = await EventLog.connect(NatsConfig(url=up.info.nats))
        try:
            for _ in range(3):
                last = await log.append(uploaded(new_id()), expected=0)
            await log.append(unplaceable("alice"))
        finally:
            await log.close()

        def projected(samples: Samples) -> bool:
            checkpoint = one(samples, "ucloud_projector_checkpoint", projection="main")
            stream = one(samples, "ucloud_stream_last_sequence")
            failed = one(samples, "ucloud_scheduler_decisions_total", outcome="failed")
            return checkpoint == stream > last and failed >= 1

        text, samples = await until(up.info.metrics, projected, "projected and scheduled")
        checkpoint = one(samples, "ucloud_projector_checkpoint", projection="main")
        assert isinstance(checkpoint, int) and f" {checkpoint}\n" in text  # parsed as written
        counts = {
            name: [v for _, v in found] for name, found in samples.items()
            if name.startswith("ucloud_") and not name.endswith(("_created", "_sum"))
            and "seconds" not in name
        }
        assert counts and all(isinstance(v, int) for v in sum(counts.values(), [])), counts
        assert one(samples, "ucloud_projector_lag_events", projection="main") == 0
        assert one(samples, "ucloud_projector_applied_total", projection="main") >= 4
        assert one(samples, "ucloud_consumer_processed_total", durable="scheduler") >= 1
        assert one(samples, "ucloud_metadata_requests_total", outcome="refused") == 0
        assert one(samples, "ucloud_gateway_lag_events") >= 0
        assert one(samples, "ucloud_vm_running") == 0
        assert one(samples, "process_cpu_seconds_total") > 0

        # the gateway's own /metrics is the same process's, with its requests
        async with httpx.AsyncClient(timeout=10) as client:
            await client.get(f"{up.info.gateway}/v1/me")
        _, gateway = await scrape(f"{up.info.gateway}/metrics")
        assert one(gateway, "ucloud_http_requests_total", route="/v1/me", status="401") >= 1
        assert isinstance(one(gateway, "ucloud_stream_last_sequence"), int)

        # ucloud serve: one endpoint per process, where metrics.listen says
        port = free_port("::1")
        settings = data_dir.parent / "serve.toml"
        settings.write_text(f'[metrics]\nlisten = "[::1]:{port}"\n')
        env = dict(os.environ)
        env.pop("UCLOUD_CONFIG", None)
        serve = subprocess.Popen(
            ucloud("--config", str(settings), "serve", "projector", "--data-dir", str(data_dir)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, env=env,
        )
        url = f"http://[::1]:{port}/metrics"
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                _, own = await scrape(url)
                if "ucloud_projector_checkpoint" in own:
                    break
            except httpx.TransportError:
                assert serve.poll() is None, "ucloud serve projector ended"
            assert time.monotonic() < deadline, "ucloud serve projector never served /metrics"
            await asyncio.sleep(0.2)
        assert one(own, "ucloud_stream_last_sequence") >= last
        assert "ucloud_http_requests_total" not in own  # the gateway is another process
    finally:
        if serve is not None:
            serve.terminate()
            serve.wait(30)
        errors.close()
        assert up.terminate() == 0
        assert serve is None or serve.returncode == 0
