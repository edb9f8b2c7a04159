"""The runner's pure parts: the consumer it asks for, retry delays, the last delivery."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js import api as js_api

from ucloud.config import ConsumerConfig
from ucloud.consumer import Quieted, consumer_config, is_last_delivery, retry_delay
from ucloud.errors import ConfigError, InputError

SETTINGS = ConsumerConfig(batch=16, ack_wait_s=2.5, max_deliver=4, backoff_s=[0.5, 1.0])


def test_one_subject_is_a_filter_subject() -> None:
    config = consumer_config("scheduler", ["x.evt.vm.*.requested"], SETTINGS)
    assert config.durable_name == config.name == "scheduler"
    assert config.filter_subject == "x.evt.vm.*.requested"
    assert config.filter_subjects is None
    assert config.ack_policy == js_api.AckPolicy.EXPLICIT
    assert config.deliver_policy == js_api.DeliverPolicy.ALL
    assert (config.ack_wait, config.max_deliver) == (2.5, 4)
    assert config.backoff is None  # the server would replace ack_wait by backoff[0]


def test_several_subjects_are_filter_subjects() -> None:
    subjects = ["x.evt.vm.*.requested", "x.evt.host.*.down"]
    config = consumer_config("scheduler", subjects, SETTINGS)
    assert config.filter_subject is None
    assert config.filter_subjects == subjects


@pytest.mark.parametrize(
    ("durable", "subjects", "settings", "error", "names"),
    [
        ("a.b", ["s"], SETTINGS, InputError, "durable"),
        ("", ["s"], SETTINGS, InputError, "durable"),
        ("ok", [], SETTINGS, InputError, "subjects"),
        ("ok", ["s"], ConsumerConfig(batch=0), ConfigError, "consumer.batch"),
        ("ok", ["s"], ConsumerConfig(ack_wait_s=0), ConfigError, "consumer.ack_wait_s"),
        ("ok", ["s"], ConsumerConfig(max_deliver=0), ConfigError, "consumer.max_deliver"),
        ("ok", ["s"], ConsumerConfig(max_deliver=-2), ConfigError, "consumer.max_deliver"),
        ("ok", ["s"], ConsumerConfig(backoff_s=[1, -1]), ConfigError, "consumer.backoff_s"),
    ],
)
def test_bad_settings_are_named(
    durable: str, subjects: list[str], settings: ConsumerConfig, error: type[Exception], names: str
) -> None:
    with pytest.raises(error) as caught:
        consumer_config(durable, subjects, settings)
    assert names in str(caught.value)


@pytest.mark.parametrize(
    ("backoff", "delivered", "delay"),
    [
        ([1.0, 5.0, 30.0], 1, 1.0),
        ([1.0, 5.0, 30.0], 2, 5.0),
        ([1.0, 5.0, 30.0], 3, 30.0),
        ([1.0, 5.0, 30.0], 9, 30.0),
        ([1.0, 5.0, 30.0], 0, 1.0),
        ([], 3, 0.0),
    ],
)
def test_retry_delay_follows_the_backoff(
    backoff: list[float], delivered: int, delay: float
) -> None:
    assert retry_delay(backoff, delivered) == delay


@given(
    st.lists(st.floats(min_value=0, max_value=3600), min_size=1, max_size=8),
    st.integers(min_value=-3, max_value=100),
)
def test_retry_delay_is_always_one_of_the_backoff(backoff: list[float], delivered: int) -> None:
    delay = retry_delay(backoff, delivered)
    assert delay in backoff
    if delivered >= len(backoff):
        assert delay == backoff[-1]


@pytest.mark.parametrize(
    ("delivered", "max_deliver", "last"),
    [(1, 3, False), (2, 3, False), (3, 3, True), (4, 3, True), (1, 1, True), (50, -1, False)],
)
def test_last_delivery(delivered: int, max_deliver: int, last: bool) -> None:
    assert is_last_delivery(delivered, max_deliver) is last


def test_a_server_away_for_minutes_is_one_warning_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    quiet = Quieted(every_s=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "ucloud.consumer"):
        for _ in range(150):  # a retry a second for 150 s
            quiet.warn("fetch", "x: fetch failed (%s)", "no quorum")
            quiet.warn("bind", "x: cannot bind")
            now[0] += 1.0
    fetch = [r.getMessage() for r in caplog.records if "fetch" in r.getMessage()]
    assert fetch == ["x: fetch failed (no quorum)",
                     "x: fetch failed (no quorum) (59 more since 60s ago)",
                     "x: fetch failed (no quorum) (59 more since 60s ago)"]
    assert sum("bind" in r.getMessage() for r in caplog.records) == 3
