"""A user's lifecycle: show what it owns, disable, enable, delete; rotate your own TOTP secret.

- Disable appends ``user.disabled``: every gateway's token check reads the user's view from
  its mirror of the projection, so the user's tokens and logins are refused everywhere as
  soon as the mirror follows; what the user owns keeps running. Enable undoes it.
- Delete is refused (409 naming what the user owns) while the user owns VMs, networks,
  images or files. With ``cascade`` it deletes them in order, each through its normal
  intent, waiting until the projection shows each kind gone: VMs, networks, images, files;
  then removes the keys, appends ``user.deleted`` and removes the TOTP secret, the used-OTP
  step and the idempotency records. The name can then be taken by a new user, whose
  ``user.created`` has another id, so none of the old user's tokens pass as the new one's,
  and who sees nothing of the old one (orders and VM audits older than the new user's
  creation are not the new user's).
- ``POST /v1/me/totp {otp}`` checks the current code (once, as a login does), stores a new
  secret guarded on the old one and answers it, once; the old secret stops working.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec

from ucloud import events as ev
from ucloud.errors import InputError, NotFound, Refused
from ucloud.events.stored import Stored
from ucloud.files import file_path, record_deletion
from ucloud.gateway import login
from ucloud.gateway.appending import Decision, decide_and_append
from ucloud.gateway.http import Answer, Call, Endpoint
from ucloud.gateway.idempotency import idempotent
from ucloud.gateway.routes_users import alive, current_keys
from ucloud.gateway.schemas import Request, UserCreatedAnswer
from ucloud.gateway.state import Gateway, envelope
from ucloud.projections.views import UserView

_BUSY = ("name", "the user kept changing; try again")
_NAMED = 5


class NotGone(InputError):
    """A cascade whose resources did not go in time (the request was carried out so far)."""

    status = 504


class Owned(msgspec.Struct, kw_only=True):
    """Names of what a user owns, by kind."""

    vms: list[str] = msgspec.field(default_factory=list)
    networks: list[str] = msgspec.field(default_factory=list)
    images: list[str] = msgspec.field(default_factory=list)
    files: list[str] = msgspec.field(default_factory=list)
    keys: list[str] = msgspec.field(default_factory=list)

    def resources(self) -> dict[str, list[str]]:
        found = {"VM": self.vms, "network": self.networks, "image": self.images,
                 "file": self.files}
        return {kind: names for kind, names in found.items() if names}


class UserShown(msgspec.Struct, kw_only=True):
    user: UserView
    owns: Owned


class UserDelete(msgspec.Struct, kw_only=True):
    cascade: bool = False  # delete what the user owns first (VMs, networks, images, files)


class TotpRotate(Request, kw_only=True):
    otp: str  # your current one-time password


def owned(gw: Gateway, user: str) -> Owned:
    mirror = gw.mirror
    view = mirror.users.get(user)
    return Owned(
        vms=sorted(e.view.name for e in mirror.vms.of_owner(user)),
        networks=sorted(e.view.name for e in mirror.nets.of_owner(user)),
        images=sorted(e.view.name for e in mirror.images.of_owner(user)),
        files=sorted(e.view.name for e in mirror.files.of_owner(user)),
        keys=sorted(k.name for k in view.view.keys) if view is not None else [],
    )


def describe(resources: dict[str, list[str]]) -> str:
    parts = []
    for kind, names in resources.items():
        shown = ", ".join(names[:_NAMED]) + (", ..." if len(names) > _NAMED else "")
        parts.append(f"{len(names)} {kind}(s): {shown}")
    return "; ".join(parts)


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror
    timeout = gw.config.gateway.cascade_timeout_s

    def find(name: str) -> UserView:
        entry = mirror.users.get(name)
        if entry is None:
            raise NotFound("name", f"no user {name}")
        return entry.view

    def not_yourself(call: Call, name: str, action: str) -> None:
        if name == call.principal.name:
            raise Refused("name", f"you cannot {action} yourself")

    async def show(call: Call) -> Answer:
        name = call.params["name"]
        return Answer(200, UserShown(user=find(name), owns=owned(gw, name)))

    def switch(disabled: bool) -> Any:
        async def act(call: Call) -> Answer:
            name = call.params["name"]
            find(name)
            not_yourself(call, name, "disable" if disabled else "enable")

            def decide(events: list[Stored]) -> Decision[None]:
                if not alive(events):
                    raise NotFound("name", f"no user {name}")
                view = find(name)
                if view.disabled == disabled:
                    return Decision(None, None)
                head = envelope(call.principal, call.new_id("request"))
                kind = ev.UserDisabled if disabled else ev.UserEnabled
                return Decision(kind(**head, user=name), None)

            await decide_and_append(gw, "user", name, decide, busy=_BUSY)
            return Answer(200, find(name))

        return act

    async def until_gone(what: str, left: Any, request: Any) -> None:
        """Request the deletion of what ``left()`` lists until nothing is left."""
        deadline = time.monotonic() + timeout
        asked: set[str] = set()
        while True:
            entries = list(left())
            if not entries:
                return
            for entry in entries:
                if entry.view.id not in asked and await request(entry.view):
                    asked.add(entry.view.id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = sorted(e.view.name for e in entries)
                raise NotGone("cascade", f"{what} not gone within {timeout:g} s (the delete"
                              f" may be asked again): {', '.join(names[:_NAMED])}")
            try:
                await asyncio.wait_for(mirror.changed(), min(remaining, 1.0))
            except TimeoutError:
                pass

    async def cascade(call: Call, name: str) -> None:
        actor = call.principal

        def intent(aggregate: str, make: Any) -> Any:
            async def request(view: Any) -> bool:
                if view.status == "deleting":
                    return True
                if aggregate != "vm" and view.status == "requested":
                    return False  # still being made: asked again when it is

                def decide(_: list[Stored]) -> Decision[None]:
                    return Decision(make(**envelope(actor), **{aggregate: view.id}), None)

                await decide_and_append(gw, aggregate, view.id, decide, busy=_BUSY)
                return True

            return request

        await until_gone("VMs", lambda: mirror.vms.of_owner(name),
                         intent("vm", ev.VmDeleteRequested))
        await until_gone("networks", lambda: mirror.nets.of_owner(name),
                         intent("net", ev.NetDeleteRequested))
        others = [e.view.name for e in mirror.vms.all()
                  if (image := mirror.images.get(e.view.image)) and image.view.owner == name]
        if others:
            raise Refused("cascade", f"other users' VMs use {name}'s images: "
                          f"{', '.join(sorted(others)[:_NAMED])}")
        await until_gone("images", lambda: mirror.images.of_owner(name),
                         intent("image", ev.ImageDeleteRequested))
        root = gw.config.paths.files
        for entry in list(mirror.files.of_owner(name)):
            path = file_path(root, name, entry.view.name)
            await asyncio.to_thread(path.unlink, missing_ok=True)
            await gw.settled(await record_deletion(gw.log, name, entry.view.name, actor.name))

    async def delete(call: Call) -> Answer:
        name = call.params["name"]
        query: UserDelete = call.query
        find(name)
        not_yourself(call, name, "delete")
        # the whole log as it stood: a VM requested before the delete is seen owned
        await gw.settled(await gw.log.last_sequence())
        resources = owned(gw, name).resources()
        if resources and not query.cascade:
            raise Refused("name", f"user {name} owns {describe(resources)}; delete those"
                          " first or ask for cascade")
        if resources:
            await cascade(call, name)

        def decide(events: list[Stored]) -> Decision[None]:
            if not alive(events):
                return Decision(None, None)
            keys = current_keys(events)
            if keys:  # one key at a time: decided again on the aggregate each has moved to
                key = next(iter(keys))
                return Decision(ev.UserKeyRemoved(**envelope(call.principal), user=name,
                                                  key=key), None)
            return Decision(ev.UserDeleted(**envelope(call.principal), user=name), None)

        while mirror.users.get(name) is not None:
            await decide_and_append(gw, "user", name, decide, busy=_BUSY)
        await gw.credentials.remove(name)
        await gw.store.delete_prefix(f"{gw.config.etcd.secrets_prefix}idempotency/{name}/")
        return Answer(204)

    async def rotate(call: Call) -> Answer:
        principal = call.principal
        body: TotpRotate = call.body
        record = await gw.auth.check_otp(principal.name, principal.realm, body.otp, time.time())
        secret = login.new_secret()
        if not await gw.credentials.replace(principal.name, record, secret):
            raise Refused("otp", "your secret changed meanwhile; log in again")
        head = envelope(principal, call.new_id("request"))
        await gw.log.append(ev.UserTotpRotated(**head, user=principal.name))
        uri = login.provisioning_uri(secret, principal.name, principal.realm)
        return Answer(200, UserCreatedAnswer(
            name=principal.name, realm=principal.realm, otpauth_uri=uri
        ))

    user = "/v1/users/{name}"
    return [
        Endpoint("GET", user, show, "A user and the names of what it owns",
                 answer=UserShown, access="admin", errors=(401, 403, 404)),
        idempotent(gw, Endpoint(
            "POST", f"{user}/disable", switch(True),
            "Disable a user: its tokens and logins are refused, what it owns keeps running",
            answer=UserView, access="admin", errors=(401, 403, 404, 409),
        )),
        idempotent(gw, Endpoint(
            "POST", f"{user}/enable", switch(False), "Enable a disabled user again",
            answer=UserView, access="admin", errors=(401, 403, 404, 409),
        )),
        Endpoint(
            "DELETE", user, delete,
            "Delete a user that owns nothing, or with cascade=true all it owns first",
            status=204, query=UserDelete, access="admin", errors=(401, 403, 404, 409, 504),
            description="With cascade the answer comes once every VM, network, image and"
            " file of the user is gone (each deleted through its normal intent, VMs first);"
            " a resource that is not gone within gateway.cascade_timeout_s is a 504 and the"
            " delete may be asked again.",
        ),
        idempotent(gw, Endpoint(
            "POST", "/v1/me/totp", rotate,
            "Replace your TOTP secret (with your current code); the answer holds the new"
            " one, once", body=TotpRotate, answer=UserCreatedAnswer, errors=(400, 401, 409),
        )),
    ]
