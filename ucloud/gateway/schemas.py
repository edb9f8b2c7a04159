"""Request and response bodies of the REST API that are not projection views.

Requests forbid unknown fields, so a misspelt field is a 400 naming it rather than a
silently ignored option. Views (VmView, HostView, KeyView, UserView) are answered as the
projection stores them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from ucloud.events.types import RestartPolicy

Size = int | str


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
    name: str
    realm: str


class UserCreatedAnswer(msgspec.Struct, kw_only=True):
    name: str
    realm: str
    otpauth_uri: str  # carries the TOTP secret: shown once, never again


class KeyCreate(Request, kw_only=True):
    name: str
    public_key: str


class VmCreate(Request, kw_only=True):
    name: str
    cpu: int
    ram: Size  # GiB as an integer, or "512M", "2G", "1T"
    ssd: Size
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
    cpu: int
    ram: Size
    ssd: Size
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
    id: str
    cpu: int
    ram: Size
    ssd: Size
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
