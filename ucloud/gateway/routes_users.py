"""Users (admin realm) and each user's SSH keys.

Creating a user stores its TOTP secret first, guarded on the user having none, then appends
``user.created`` expecting an empty aggregate (or one that ends in ``user.deleted``: a
name may be taken again once its user is gone): of two concurrent creations exactly one
wins, and a name that already exists is a 409 that changes nothing. Key changes append to
the user aggregate with OCC on its last sequence, deciding on the keys folded from the log.
"""

from __future__ import annotations

import re

from ucloud import events as ev
from ucloud.errors import ConflictError, InputError, NotFound, Refused
from ucloud.events import Stored
from ucloud.events.base import valid_token
from ucloud.gateway import login
from ucloud.gateway.appending import Decision, decide_and_append
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Answer, Call, Endpoint, raw_list
from ucloud.gateway.idempotency import idempotent
from ucloud.gateway.schemas import KeyCreate, UserCreate, UserCreatedAnswer
from ucloud.gateway.sshkeys import parse_public_key
from ucloud.gateway.state import Gateway, envelope
from ucloud.projections.views import KeyView, UserView

_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_KEYS_CHANGING = "your keys kept changing; try again"


def check_name(field: str, value: str) -> None:
    if not valid_token(value) or len(value) > 64:
        raise InputError(field, "use 1-64 letters, digits, '-' or '_'")


async def create_user(
    gw: Gateway, name: str, realm: str, actor: str, secret: str | None = None,
    *, settle: bool = True, request: str | None = None,
) -> str:
    """Create a user and return its TOTP secret; Refused when the name is taken.

    With ``settle`` it returns once the projection shows the user; ``request`` is the
    event's id (default: a fresh one).
    """
    check_name("name", name)
    check_name("realm", realm)
    secret = secret or login.new_secret()
    if not await gw.credentials.create(name, realm, secret):
        raise Refused("name", f"user {name} already exists")
    event = ev.UserCreated(**envelope(actor, request), user=name, realm=realm)
    try:
        # a name taken again after ``user.deleted``: the aggregate goes on from there
        events, last = await gw.log.load("user", name)
        if alive(events):
            raise ConflictError(f"user.{name}", last, "the user exists")
        seq = await gw.log.append(event, expected=last)
    except ConflictError as exc:
        await gw.credentials.remove(name)
        raise Refused("name", f"user {name} already exists") from exc
    except BaseException:
        await gw.credentials.remove(name)
        raise
    if settle:
        await gw.settled(seq)
    return secret


def alive(events: list[Stored]) -> bool:
    """Whether the user aggregate's last ``user.created`` has no ``user.deleted`` after it."""
    state = False
    for stored in events:
        if isinstance(stored.event, ev.UserCreated):
            state = True
        elif isinstance(stored.event, ev.UserDeleted):
            state = False
    return state


def current_keys(events: list[Stored]) -> dict[str, ev.UserKeyAdded]:
    """The user's keys by id, folded from the user aggregate's events."""
    keys: dict[str, ev.UserKeyAdded] = {}
    for stored in events:
        event = stored.event
        if isinstance(event, ev.UserCreated | ev.UserDeleted):
            keys = {}  # a user made again under a deleted one's name starts without keys
        elif isinstance(event, ev.UserKeyAdded):
            keys[event.key] = event
        elif isinstance(event, ev.UserKeyRemoved):
            keys.pop(event.key, None)
    return keys


def find_key(keys: dict[str, ev.UserKeyAdded], ident: str) -> ev.UserKeyAdded | None:
    return keys.get(ident) or next((k for k in keys.values() if k.name == ident), None)


def own_keys(gw: Gateway, principal: Principal) -> tuple[KeyView, ...]:
    user = gw.mirror.users.get(principal.name)
    return () if user is None else user.view.keys


def endpoints(gw: Gateway) -> list[Endpoint]:
    async def add_user(call: Call) -> Answer:
        body: UserCreate = call.body
        secret = await create_user(
            gw, body.name, body.realm, call.principal.name, request=call.new_id("request")
        )
        uri = login.provisioning_uri(secret, body.name, body.realm)
        return Answer(201, UserCreatedAnswer(name=body.name, realm=body.realm, otpauth_uri=uri))

    async def list_users(call: Call) -> Answer:
        users = sorted(gw.mirror.users.all(), key=lambda e: e.view.name)
        return Answer(200, raw_list([e.raw for e in users]))

    async def list_keys(call: Call) -> Answer:
        return Answer(200, list(own_keys(gw, call.principal)))

    async def add_key(call: Call) -> Answer:
        body: KeyCreate = call.body
        if not _KEY_NAME.match(body.name):
            raise InputError("name", "use 1-64 letters, digits, '.', '@', '-' or '_'")
        line = parse_public_key(body.public_key).line()
        user = call.principal.name

        def decide(events: list[Stored]) -> Decision[KeyView]:
            keys = current_keys(events)
            key = call.new_id("key")
            if key in keys:  # a retry of a request that added it
                return Decision(None, KeyView(id=key, name=body.name, public_key=line))
            if any(k.name == body.name for k in keys.values()):
                raise Refused("name", f"you already have a key named {body.name}")
            if any(k.public_key.split()[:2] == line.split()[:2] for k in keys.values()):
                raise Refused("public_key", "this key is already added")
            event = ev.UserKeyAdded(
                **envelope(call.principal, call.new_id("request")), user=user, key=key,
                name=body.name, public_key=line,
            )
            return Decision(event, KeyView(id=key, name=body.name, public_key=line))

        added = await decide_and_append(
            gw, "user", user, decide, busy=("name", _KEYS_CHANGING), settle=None
        )
        return Answer(201, added)

    async def remove_key(call: Call) -> Answer:
        user = call.principal.name

        def decide(events: list[Stored]) -> Decision[None]:
            key = find_key(current_keys(events), call.params["id"])
            if key is None:
                raise NotFound("id", f"no key {call.params['id']}")
            event = ev.UserKeyRemoved(
                **envelope(call.principal, call.new_id("request")), user=user, key=key.key
            )
            return Decision(event, None)

        await decide_and_append(gw, "user", user, decide, busy=("id", _KEYS_CHANGING), settle=None)
        return Answer(204)

    return [
        idempotent(gw, Endpoint(
            "POST", "/v1/users", add_user, "Create a user; the answer holds its TOTP secret, once",
            status=201, body=UserCreate, answer=UserCreatedAnswer, access="admin",
            errors=(400, 401, 403, 409),
        )),
        Endpoint(
            "GET", "/v1/users", list_users, "All users", answer=list[UserView], access="admin",
            errors=(401, 403),
        ),
        Endpoint(
            "GET", "/v1/keys", list_keys, "Your SSH keys", answer=list[KeyView], errors=(401,)
        ),
        idempotent(gw, Endpoint(
            "POST", "/v1/keys", add_key, "Add an SSH public key", status=201, body=KeyCreate,
            answer=KeyView, errors=(400, 401, 409),
        )),
        Endpoint(
            "DELETE", "/v1/keys/{id}", remove_key, "Remove one of your SSH keys (id or name)",
            status=204, errors=(401, 404),
        ),
    ]
