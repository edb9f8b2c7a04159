"""Finding what a request names: by id if the caller may see it, else by the caller's name.

Every rule of "which resource does this identifier mean, and may this user use it" lives
here, so that VMs, networks, images, orders and consoles answer alike: another owner's id
is the same 404 as an id that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Protocol, TypeVar

from ucloud.errors import InputError, NotFound, Refused
from ucloud.events.base import valid_token
from ucloud.gateway.auth import Principal
from ucloud.projections.mirror import Entry, Kind, Mirror
from ucloud.projections.views import ImageView, NetView


class _Owned(Protocol):
    @property
    def owner(self) -> str: ...


OwnedView = TypeVar("OwnedView", bound=_Owned)


def check_resource_name(name: str, what: str) -> None:
    """Names of VMs and networks: a subject-safe token that cannot be mistaken for an id."""
    if not valid_token(name) or len(name) > 63:
        raise InputError("name", "use 1-63 letters, digits, '-' or '_'")
    try:
        uuid.UUID(name)
    except ValueError:
        return
    raise InputError("name", f"must not look like a {what} id")


def owned(kind: Kind[OwnedView], principal: Principal, ident: str, what: str) -> Entry[OwnedView]:
    """The resource with id ``ident`` that the caller may see, else the caller's own of that
    name; NotFound (field ``id``) otherwise."""
    entry = kind.get(ident)
    if entry is not None and principal.sees(entry.view.owner):
        return entry
    entry = kind.named(principal.name, ident)
    if entry is None:
        raise NotFound("id", f"no {what} {ident}")
    return entry


def visible_image(mirror: Mirror, principal: Principal, ident: str) -> ImageView | None:
    """The image ``ident`` (an id, or the name of your own or of a public one) if you may
    use it."""
    entry = mirror.images.get(ident)
    if entry is not None and (entry.view.public or principal.sees(entry.view.owner)):
        return entry.view
    entry = mirror.images.named(principal.name, ident)
    if entry is not None:
        return entry.view
    return next(
        (e.view for e in mirror.images.all() if e.view.public and e.view.name == ident), None
    )


def own_networks(
    mirror: Mirror, principal: Principal, idents: list[str], *, created: bool
) -> list[NetView]:
    """The caller's networks ``idents`` (ids or names), each once, in order; with
    ``created`` each must be ready for NICs. Errors name ``networks[i]``."""
    found: list[NetView] = []
    for index, ident in enumerate(idents):
        field = f"networks[{index}]"
        entry = mirror.nets.get(ident)
        if entry is None or entry.view.owner != principal.name:
            entry = mirror.nets.named(principal.name, ident)
        if entry is None:
            raise InputError(field, f"no network {ident} of yours")
        if created and entry.view.status != "created":
            raise Refused(field, f"network {ident} is {entry.view.status}, not created")
        if any(net.id == entry.view.id for net in found):
            raise InputError(field, f"network {ident} is listed twice")
        found.append(entry.view)
    return found
