"""Images: request one from a file, list, show, delete.

An image is private to its owner unless it is public; only the admin realm makes public
images, and every user sees them. ``POST /v1/images`` checks the name, the file (one of
the caller's, as the projection shows it) and the store, then appends ``image.requested``
naming the file's id, name and content (sha256), so that imagescan makes the image of
exactly what was asked for. Delete is refused while the image is being made or while VMs
use it; otherwise it appends ``image.delete_requested`` with OCC on the image.
"""

from __future__ import annotations

from collections.abc import Iterable

from ucloud import events as ev
from ucloud.errors import Forbidden, InputError, NotFound, Refused
from ucloud.events.stored import Stored
from ucloud.events.types import StoreKind
from ucloud.gateway.appending import Decision, decide_and_append
from ucloud.gateway.auth import Principal
from ucloud.gateway.http import Answer, Call, Endpoint, RawJson, raw_list
from ucloud.gateway.idempotency import idempotent
from ucloud.gateway.schemas import Request
from ucloud.gateway.state import Gateway, envelope
from ucloud.images.validate import check_image_name
from ucloud.projections.mirror import Entry
from ucloud.projections.views import FileView, ImageView

_BUSY = ("status", "the image kept changing; try again")


class ImageCreate(Request, kw_only=True):
    file: str  # one of your files, by name or id
    name: str
    store: StoreKind = "fs"
    public: bool = False  # admin only: visible to every user


def endpoints(gw: Gateway) -> list[Endpoint]:
    mirror = gw.mirror

    def visible(principal: Principal, view: ImageView) -> bool:
        return view.public or principal.sees(view.owner)

    def find(principal: Principal, ident: str) -> Entry[ImageView]:
        entry = mirror.images.get(ident)
        if entry is None or not visible(principal, entry.view):
            entry = mirror.images.named(principal.name, ident) or _public_named(
                mirror.images.all(), ident
            )
        if entry is None:
            raise NotFound("id", f"no image {ident}")
        return entry

    def own_file(principal: Principal, ident: str) -> FileView:
        entry = mirror.files.named(principal.name, ident) or mirror.files.get(ident)
        if entry is None or entry.view.owner != principal.name:
            raise InputError("file", f"no file {ident} of yours; upload it first")
        return entry.view

    async def create(call: Call) -> Answer:
        body: ImageCreate = call.body
        principal = call.principal
        check_image_name(body.name)
        if body.public and not principal.admin:
            raise Forbidden("public", "only the admin realm may create public images")
        image = call.new_id("image")
        named = mirror.images.named(principal.name, body.name)
        if named is not None and named.view.id == image:  # a retry of a request that made it
            return Answer(202, RawJson(named.raw))
        if named is not None:
            raise Refused("name", f"you already have an image named {body.name}")
        if body.public and _public_named(mirror.images.all(), body.name) is not None:
            raise Refused("name", f"a public image named {body.name} exists")
        file = own_file(principal, body.file)
        event = ev.ImageRequested(
            **envelope(principal, call.new_id("request")), image=image, owner=principal.name,
            name=body.name,
            file=file.id, file_name=file.name, file_sha256=file.sha256, store=body.store,
            public=body.public,
        )
        seq = await gw.log.append(event, expected=0)
        await gw.settled(seq)
        return Answer(202, _raw(mirror.images.get(image), image))

    async def list_images(call: Call) -> Answer:
        principal = call.principal
        entries = [e for e in mirror.images.all() if visible(principal, e.view)]
        entries.sort(key=lambda e: (not e.view.public, e.view.owner, e.view.name, e.view.id))
        return Answer(200, raw_list([e.raw for e in entries]))

    async def show(call: Call) -> Answer:
        return Answer(200, RawJson(find(call.principal, call.params["id"]).raw))

    async def delete(call: Call) -> Answer:
        principal = call.principal
        image = find(principal, call.params["id"]).view.id

        def decide(_: list[Stored]) -> Decision[Entry[ImageView]]:
            entry = mirror.images.get(image)
            if entry is None:
                raise NotFound("id", f"no image {call.params['id']}")
            view = entry.view
            if not principal.sees(view.owner):
                raise Forbidden("id", f"image {view.name} is public; only its owner deletes it")
            if view.status == "deleting":
                return Decision(None, entry)
            if view.status == "requested":
                raise Refused("status", f"image {view.name} is still being made")
            users = sorted(v.view.name for v in mirror.vms.all() if v.view.image == image)
            if users:
                raise Refused(
                    "id", f"{len(users)} VM(s) use image {view.name}: {', '.join(users[:5])}"
                )
            head = envelope(principal, call.new_id("request"))
            return Decision(ev.ImageDeleteRequested(**head, image=image), entry)

        before = await decide_and_append(gw, "image", image, decide, busy=_BUSY)
        return Answer(202, _raw(mirror.images.get(image), image, before))

    return [
        idempotent(gw, Endpoint(
            "POST", "/v1/images", create, "Make an image from one of your files", status=202,
            body=ImageCreate, answer=ImageView, errors=(400, 401, 403, 409),
        )),
        Endpoint(
            "GET", "/v1/images", list_images, "Public images and yours (admin: all)",
            answer=list[ImageView], errors=(401,),
        ),
        Endpoint(
            "GET", "/v1/images/{id}", show, "One image, by id or name", answer=ImageView,
            errors=(401, 404),
        ),
        Endpoint(
            "DELETE", "/v1/images/{id}", delete, "Delete an image no VM uses", status=202,
            answer=ImageView, errors=(401, 403, 404, 409),
        ),
    ]


def _public_named(entries: Iterable[Entry[ImageView]], name: str) -> Entry[ImageView] | None:
    return next((e for e in entries if e.view.public and e.view.name == name), None)


def _raw(
    entry: Entry[ImageView] | None, image: str, before: Entry[ImageView] | None = None
) -> RawJson:
    chosen = entry or before
    if chosen is None:
        raise NotFound("id", f"image {image} is gone")
    return RawJson(chosen.raw)
