"""A VM spec as a request writes it: CPUs, sizes, image and networks.

``POST /v1/vms`` and ``POST /v1/orders/quote`` read a spec with the same function, so
that a spec the quote prices is one the VM create accepts, and one refused is refused
by both with the same field: ``cpu``, ``ram``, ``ssd``, ``hdd``, ``image`` or
``networks[i]``. Only readiness differs: a VM is made now, so its image and networks
must be created (``ready``); a quote prices an image or a network still being made.
"""

from __future__ import annotations

from dataclasses import dataclass

from ucloud import events as ev
from ucloud.errors import InputError, Refused
from ucloud.gateway.auth import Principal
from ucloud.gateway.lookup import own_networks, visible_image
from ucloud.gateway.schemas import MAX_CPU, QuoteRequest, VmCreate
from ucloud.gateway.sizes import parse_positive_size, parse_size
from ucloud.projections.mirror import Mirror
from ucloud.projections.views import ImageView, NetView


@dataclass(frozen=True, slots=True)
class VmSpec:
    resources: ev.Resources
    image: ImageView | None  # None: a quote without an image
    networks: tuple[NetView, ...]  # one NIC each

    @property
    def image_name(self) -> str:
        """The name prices know a licensed image by ("" for none)."""
        return self.image.name if self.image is not None else ""


def vm_resources(cpu: int, ram: int | str, ssd: int | str, hdd: int | str) -> ev.Resources:
    """A VM's resources from sizes as users write them; InputError names the field."""
    if not 0 < cpu <= MAX_CPU:
        raise InputError("cpu", f"must be between 1 and {MAX_CPU}")
    return ev.Resources(
        cpu=cpu,
        ram_mib=parse_positive_size(ram, "ram"),
        ssd_mib=parse_positive_size(ssd, "ssd"),
        hdd_mib=parse_size(hdd, "hdd"),
    )


def read_spec(
    mirror: Mirror, principal: Principal, body: VmCreate | QuoteRequest, *, ready: bool
) -> VmSpec:
    """The spec of ``body``, checked in the order of its fields.

    With ``ready`` (a VM to make now) the image is required and must be created, and so
    must the networks; without it an image is optional and either may still be in the
    making.
    """
    resources = vm_resources(body.cpu, body.ram, body.ssd, body.hdd)
    image = None
    if body.image or ready:
        image = visible_image(mirror, principal, body.image)
        if image is None:
            raise InputError("image", f"no image {body.image} visible to you")
        if ready and image.status != "created":
            raise Refused("image", f"image {body.image} is {image.status}, not created")
    networks = own_networks(mirror, principal, body.networks, created=ready)
    return VmSpec(resources=resources, image=image, networks=tuple(networks))
