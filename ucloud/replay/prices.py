"""The price table and quotes: what a VM spec costs per running minute.

A price table is a TOML file (``[billing] prices`` in the config; a sample ships as
``prices.sample.toml`` next to this module)::

    currency = "CHF"
    decimals = 2          # amounts are rounded half up to this many places

    [per_minute]          # per unit and running minute
    cpu = 0.00007         # per core
    ram_gib = 0.00009
    ssd_gib = 0.0000008
    hdd_gib = 0.0000002
    nic = 0.00001         # per network interface

    [per_minute.images]   # licensed images, by image name
    "windows-2022" = 0.0003

Numbers are read as exact decimals (never binary floats); strings such as ``"0.0001"``
work too. ``quote`` is pure: the price lines of a spec, the price per minute and per
30 days. An order freezes the lines of a quote (``order.placed``).
"""

from __future__ import annotations

import re
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import msgspec

from ucloud.errors import ConfigError, InputError
from ucloud.events.order import PriceLine
from ucloud.events.types import Resources

MINUTES_PER_30_DAYS = 30 * 24 * 60
MIB_PER_GIB = 1024
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class UnitPrices(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prices per unit and running minute."""

    cpu: Decimal
    ram_gib: Decimal
    ssd_gib: Decimal
    hdd_gib: Decimal = Decimal(0)
    nic: Decimal = Decimal(0)
    images: dict[str, Decimal] = msgspec.field(default_factory=dict)


class PriceTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    currency: str
    per_minute: UnitPrices
    decimals: int = 2

    def round(self, amount: Decimal) -> Decimal:
        return money(amount, self.decimals)


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """The price of a VM spec: its lines, per minute (exact) and per 30 days (rounded to
    ``decimals`` places)."""

    currency: str
    lines: tuple[PriceLine, ...]
    per_minute: Decimal
    per_30_days: Decimal
    decimals: int


def money(amount: Decimal, decimals: int) -> Decimal:
    """``amount`` rounded half up to ``decimals`` places."""
    return amount.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def per_30_days(per_minute: Decimal, decimals: int | None) -> Decimal:
    """The price of 30 days at ``per_minute``, rounded half up to ``decimals`` places
    (exact when None): a quote's, and the order's placed from it."""
    amount = per_minute * MINUTES_PER_30_DAYS
    return amount if decimals is None else money(amount, decimals)


def load_prices(path: Path) -> PriceTable:
    """Read and check a price table; ConfigError names the file and the key."""
    try:
        raw = tomllib.loads(path.read_text(), parse_float=Decimal)
    except FileNotFoundError as exc:
        raise ConfigError(str(path), "no such price table") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"cannot read the price table: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    return parse_prices(raw, str(path))


def parse_prices(raw: dict[str, Any], source: str = "prices") -> PriceTable:
    """A checked PriceTable from decoded TOML (``source`` names it in errors)."""
    try:
        table = msgspec.convert(raw, PriceTable)
    except msgspec.ValidationError as exc:
        raise ConfigError(source, str(exc).replace("`$.", "`")) from exc
    if not _CURRENCY.match(table.currency):
        raise ConfigError(f"{source}: currency", f"{table.currency!r} is not an ISO 4217 code")
    if not 0 <= table.decimals <= 8:
        raise ConfigError(f"{source}: decimals", "must be between 0 and 8")
    unit = table.per_minute
    named = {f: getattr(unit, f) for f in ("cpu", "ram_gib", "ssd_gib", "hdd_gib", "nic")}
    named.update({f"images.{name}": price for name, price in unit.images.items()})
    for key, price in named.items():
        if not price.is_finite() or price < 0:
            raise ConfigError(f"{source}: per_minute.{key}", f"{price} is not a price")
    return table


def price_lines(
    spec: Resources, prices: PriceTable, *, image: str = "", nics: int = 0
) -> tuple[PriceLine, ...]:
    """The priced items of a VM: cpu, RAM, disks, NICs and a licensed image, if any."""
    for field in ("cpu", "ram_mib", "ssd_mib", "hdd_mib"):
        if getattr(spec, field) < 0:
            raise InputError(f"spec.{field}", "must not be negative")
    if nics < 0:
        raise InputError("nics", "must not be negative")
    unit = prices.per_minute
    candidates = (
        ("cpu", Decimal(spec.cpu), unit.cpu),
        ("ram_gib", Decimal(spec.ram_mib) / MIB_PER_GIB, unit.ram_gib),
        ("ssd_gib", Decimal(spec.ssd_mib) / MIB_PER_GIB, unit.ssd_gib),
        ("hdd_gib", Decimal(spec.hdd_mib) / MIB_PER_GIB, unit.hdd_gib),
        ("nic", Decimal(nics), unit.nic),
        ("image", Decimal(1 if image in unit.images else 0), unit.images.get(image, Decimal(0))),
    )
    return tuple(
        PriceLine(item=item, quantity=quantity, unit_price=price)
        for item, quantity, price in candidates
        if quantity and (price or item in ("cpu", "ram_gib", "ssd_gib"))
    )


def quote(spec: Resources, prices: PriceTable, *, image: str = "", nics: int = 0) -> Quote:
    """What ``spec`` costs per running minute and per 30 days at ``prices``."""
    lines = price_lines(spec, prices, image=image, nics=nics)
    per_minute = sum((line.per_minute for line in lines), Decimal(0))
    return Quote(
        currency=prices.currency,
        lines=lines,
        per_minute=per_minute,
        per_30_days=per_30_days(per_minute, prices.decimals),
        decimals=prices.decimals,
    )


def plain(amount: Decimal) -> str:
    """Money and quantities as fixed-point text: ``0.0000008``, never ``8E-7``."""
    return format(amount, "f")
