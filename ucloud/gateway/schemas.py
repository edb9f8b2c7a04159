"""Request and response bodies of the REST API that are not projection views.

Requests forbid unknown fields, so a misspelt field is a 400 naming it rather than a
silently ignored option. The constraints a request must meet are stated in its types
(``Meta``): msgspec enforces them as it decodes, and the OpenAPI document shows the same
ones, so that a body the document calls valid is one the gateway takes. What a type cannot
say (that a named image exists, that a key parses) the handlers check. Views (VmView,
HostView, KeyView, UserView) are answered as the projection stores them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ucloud.events.types import RestartPolicy
from ucloud.gateway.http import readable
from ucloud.hostd.console import MAX_CHUNK

MAX_CPU = 1024  # as many as one VM may have
MAX_GIB = 1024 * 1024  # 1 PiB

_B = "([Ii]?[Bb])?"
# Sizes with a unit, each of a whole number of MiB and at most 1 PiB: up to 9 digits of M,
# 6 of G (or no unit: GiB) and 3 of T, G and T with a quarter, a half or three quarters.
_QUARTER = r"\.(25|5|75)"
_SIZE_FORMS = (
    f"{{m}}{{{{0,8}}}}[Mm]{_B}", f"{{m}}{{{{0,5}}}}([Gg]{_B})?", f"{{m}}{{{{0,2}}}}[Tt]{_B}",
    f"[0-9]{{{{1,6}}}}{_QUARTER}([Gg]{_B})?", f"[0-9]{{{{1,3}}}}{_QUARTER}[Tt]{_B}",
)
_SIZE_DOC = 'GiB as an integer, or a string with a unit M, G or T: "512M", "2G", "1.5T"'


_SIZE_READING = ("a size such as 512M, 2G or 1.5T: whole MiB, G and T in quarters, "
                 "at most 1 PiB")


def _size_pattern(first: str) -> str:
    return "^(" + "|".join(form.format(m=first) for form in _SIZE_FORMS) + ")$"


Size = (
    Annotated[int, Meta(ge=0, le=MAX_GIB, examples=[0, 20])]
    | Annotated[str, Meta(pattern=readable(_size_pattern("[0-9]"), _SIZE_READING),
                          examples=["512M", "1.5T"])]
)
PositiveSize = (
    Annotated[int, Meta(ge=1, le=MAX_GIB, examples=[2])]
    | Annotated[str, Meta(pattern=readable(_size_pattern("0*[1-9][0-9]"), _SIZE_READING),
                          examples=["2G"])]
)
Cpu = Annotated[int, Meta(ge=1, le=MAX_CPU, description="CPUs", examples=[2])]
HostCpu = Annotated[int, Meta(ge=1, le=MAX_CPU * 64, description="CPUs", examples=[64])]
# VMs, networks and hosts; users and realms (subject-safe tokens)
_NAME = "use 1-63 letters, digits, '-' or '_'"
ResourceName = Annotated[str, Meta(pattern=readable("^[A-Za-z0-9_-]{1,63}$", _NAME),
                                   description=_NAME, examples=["web-1"])]
_USER = "use 1-64 letters, digits, '-' or '_'"
UserName = Annotated[str, Meta(pattern=readable("^[A-Za-z0-9_-]{1,64}$", _USER),
                               description=_USER, examples=["alice"])]
_KEY = "use 1-64 letters, digits, '_', '.', '@' or '-', a letter or digit first"
KeyName = Annotated[str, Meta(pattern=readable("^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$", _KEY),
                              description=_KEY, examples=["laptop"])]
# files and images: letters, digits, '.', '_', '-'; a letter or digit first; no '..'
_FILE_NAME = readable(
    r"^[A-Za-z0-9](\.?[A-Za-z0-9_-])*\.?$",
    "use letters, digits, '.', '_' or '-', a letter or digit first, no '..'",
)
FileName = Annotated[str, Meta(pattern=_FILE_NAME, max_length=128, examples=["debian-12.qcow2"])]
ImageName = Annotated[str, Meta(pattern=_FILE_NAME, max_length=63, examples=["debian-12"])]


class Request(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    pass


class TokenRequest(Request, kw_only=True):
    name: str
    realm: str
    otp: str


class TokenAnswer(msgspec.Struct, kw_only=True):
    token: str
    expires_at: datetime


class Me(msgspec.Struct, kw_only=True):
    name: str
    realm: str


class UserCreate(Request, kw_only=True):
    name: UserName
    realm: UserName


class UserCreatedAnswer(msgspec.Struct, kw_only=True):
    name: str
    realm: str
    otpauth_uri: str  # carries the TOTP secret: shown once, never again


class KeyCreate(Request, kw_only=True):
    name: KeyName
    public_key: str


class VmCreate(Request, kw_only=True):
    name: ResourceName  # and not one that reads as an id (a UUID)
    cpu: Cpu
    ram: PositiveSize  # GiB as an integer, or "512M", "2G", "1T"
    ssd: PositiveSize
    hdd: Size = 0
    image: str  # image id or name (the owner's, or a public one)
    networks: list[str] = msgspec.field(default_factory=list)  # network ids or names
    keys: list[str] | None = None  # key ids or names; default: all the owner's keys
    restart: RestartPolicy = "always"
    # cloud-init user data (text): kept in etcd for the metadata service, never in an event
    user_data: str | None = None
    # place the VM through an order: the price quoted now is the price billed
    order: bool = False


class QuoteRequest(Request, kw_only=True):
    cpu: Cpu
    ram: PositiveSize
    ssd: PositiveSize
    hdd: Size = 0
    image: str = ""  # image id or name (the owner's, or a public one); "" for none
    networks: list[str] = msgspec.field(default_factory=list)  # one NIC each


class QuoteLine(msgspec.Struct, kw_only=True):
    item: str  # cpu, ram_gib, ssd_gib, hdd_gib, nic, image
    quantity: str
    unit_price: str  # per unit and running minute
    per_minute: str


class QuoteAnswer(msgspec.Struct, kw_only=True):
    """A price: money as fixed-point decimal strings, per minute exact, per 30 days rounded."""

    currency: str
    per_minute: str
    per_30_days: str
    lines: list[QuoteLine]


class VmMigrate(Request, kw_only=True):
    host: str = ""  # empty: the scheduler picks


class HostCreate(Request, kw_only=True):
    id: ResourceName
    cpu: HostCpu
    ram: PositiveSize
    ssd: PositiveSize
    hdd: Size = 0
    address: str = ""
    router: bool = False


class AuditLine(msgspec.Struct, kw_only=True):
    seq: int
    at: datetime
    actor: str
    type: str
    correlation: str
    causation: str
    summary: str


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"


class ErrorBody(msgspec.Struct, kw_only=True):
    error: str
    field: str = ""


class FilePath(msgspec.Struct, kw_only=True):
    name: FileName  # a file's name, or its id (which reads as a name too)


class ConsoleQuery(msgspec.Struct, kw_only=True):
    offset: Annotated[int, Meta(description="from this byte; negative: from the end")] = 0
    limit: Annotated[int, Meta(ge=1, description="at most this many bytes")] = MAX_CHUNK
