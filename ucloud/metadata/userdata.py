"""User data of ``vm create --user-data``: in etcd, outside the event log.

User data may carry secrets, so it never goes into an event. The gateway stores it at
``<secrets prefix>userdata/<vm id>`` when it accepts the VM (before appending
``vm.requested``, so it is there when the VM first boots); the metadata service keeps an
in-memory copy of that prefix (a watch, no etcd read per request) and serves it at
``/openstack/latest/user_data``.

Removal: the projector must not touch the secrets prefix (a rebuild would otherwise
lose user data), so the metadata service removes a VM's user data when the VM's
``vm.deleted`` event arrives, through one durable consumer (``metadata-userdata``) that
all its copies share.
"""

from __future__ import annotations

import logging

from ucloud.errors import InputError
from ucloud.events import Event, VmDeleted, subject
from ucloud.projections.mirror import Watched
from ucloud.store import Store

log = logging.getLogger(__name__)

DURABLE = "metadata-userdata"
SUBJECTS = (subject("vm", "*", "deleted"),)
FIELD = "user_data"


def userdata_prefix(secrets_prefix: str) -> str:
    return f"{secrets_prefix}userdata/"


def userdata_key(secrets_prefix: str, vm: str) -> str:
    return f"{userdata_prefix(secrets_prefix)}{vm}"


def encode_user_data(text: str, limit: int) -> bytes:
    """``text`` as stored (UTF-8); an InputError naming ``user_data`` when too large or empty."""
    data = text.encode()
    if not data:
        raise InputError(FIELD, "is empty; leave it out for none")
    if len(data) > limit:
        raise InputError(FIELD, f"is {len(data)} bytes, more than the limit of {limit}")
    return data


class UserData(Watched):
    """Every VM's user data, by VM id, kept current by a watch."""

    def __init__(self, store: Store, secrets_prefix: str) -> None:
        super().__init__(store, userdata_prefix(secrets_prefix), "metadata-userdata")
        self.by_vm: dict[str, bytes] = {}

    def reset(self) -> None:
        self.by_vm.clear()

    def apply(self, key: str, value: bytes | None) -> None:
        if "/" in key or not key:
            return
        if value is None:
            self.by_vm.pop(key, None)
        else:
            self.by_vm[key] = value


class Remover:
    """The handler of ``vm.*.deleted``: removes the VM's user data (idempotent)."""

    def __init__(self, store: Store, secrets_prefix: str) -> None:
        self.store = store
        self.secrets_prefix = secrets_prefix

    async def handle(self, event: Event, seq: int, delivered: int) -> None:
        if isinstance(event, VmDeleted):
            await self.store.delete(userdata_key(self.secrets_prefix, event.vm))
            log.debug("removed the user data of deleted VM %s (seq %d)", event.vm, seq)
