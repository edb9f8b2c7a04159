"""Deciding and appending with OCC against the real log: retries, give-up, settling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.gateway_harness import Running, gateway_config, running_gateway
from tests.unit.gateway.test_sshkeys import ED25519
from ucloud import events as ev
from ucloud.config import Config
from ucloud.errors import Refused
from ucloud.events.stored import Stored
from ucloud.gateway.appending import RETRIES, Decision, decide_and_append
from ucloud.gateway.state import envelope
from ucloud.ids import new_id

pytestmark = [pytest.mark.servers, pytest.mark.timeout(60)]


@pytest.fixture
async def gw(config: Config, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_gateway(gateway_config(config, tmp_path)) as running:
        yield running


def key_added(user: str, name: str) -> ev.UserKeyAdded:
    return ev.UserKeyAdded(
        **envelope(user), user=user, key=new_id(), name=name, public_key=ED25519
    )


async def test_a_conflict_makes_it_decide_again_on_the_new_events(gw: Running) -> None:
    alice = (await gw.new_user()).name
    seen: list[list[str]] = []

    async def decide(events: list[Stored]) -> Decision[str]:
        seen.append([s.event.name for s in events if isinstance(s.event, ev.UserKeyAdded)])
        if len(seen) == 1:  # another request appends between the load and the append
            await gw.log.append(key_added(alice, "theirs"))
        return Decision(key_added(alice, f"k{len(seen)}"), f"k{len(seen)}")

    outcome = await decide_and_append(
        gw.gateway, "user", alice, decide, busy=("name", "busy"), settle=None
    )
    assert seen == [[], ["theirs"]] and outcome == "k2"
    stored, _ = await gw.log.load("user", alice)
    assert [s.event.name for s in stored if isinstance(s.event, ev.UserKeyAdded)] == [
        "theirs", "k2"]
    # it answers once the projection shows what it appended
    user = gw.gateway.mirror.users.get(alice)
    assert user is not None and [k.name for k in user.view.keys] == ["theirs", "k2"]


async def test_an_aggregate_that_keeps_changing_is_refused(gw: Running) -> None:
    alice = (await gw.new_user()).name
    calls = 0

    async def decide(events: list[Stored]) -> Decision[None]:
        nonlocal calls
        calls += 1
        await gw.log.append(key_added(alice, f"theirs{calls}"))
        return Decision(key_added(alice, "mine"), None)

    with pytest.raises(Refused) as refused:
        await decide_and_append(
            gw.gateway, "user", alice, decide, busy=("name", "kept changing"), settle=None
        )
    assert (refused.value.field, refused.value.reason, calls) == ("name", "kept changing", RETRIES)
    stored, _ = await gw.log.load("user", alice)
    names = [s.event.name for s in stored if isinstance(s.event, ev.UserKeyAdded)]
    assert names == [f"theirs{n}" for n in range(1, RETRIES + 1)]


async def test_nothing_to_do_or_a_refusal_appends_nothing(gw: Running) -> None:
    alice = (await gw.new_user()).name
    before = await gw.last_seq()

    def nothing(events: list[Stored]) -> Decision[int]:
        return Decision(None, len(events))

    assert await decide_and_append(gw.gateway, "user", alice, nothing, busy=("", "")) == 1

    def refuse(events: list[Stored]) -> Decision[int]:
        raise Refused("status", "not now")

    with pytest.raises(Refused) as refused:
        await decide_and_append(gw.gateway, "user", alice, refuse, busy=("", ""))
    assert refused.value.reason == "not now"
    assert await gw.last_seq() == before


async def test_it_decides_on_the_view_the_loaded_events_settled_into(gw: Running) -> None:
    alice = (await gw.new_user()).name
    await gw.log.append(key_added(alice, "fresh"))  # not waited for

    def decide(events: list[Stored]) -> Decision[list[str]]:
        user = gw.gateway.mirror.users.get(alice)
        assert user is not None
        return Decision(None, [k.name for k in user.view.keys])

    assert await decide_and_append(gw.gateway, "user", alice, decide, busy=("", "")) == [
        "fresh"]
