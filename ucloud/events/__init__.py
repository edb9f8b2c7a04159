"""The event catalog: every fact and intent ucloud records, as frozen msgspec Structs."""

from ucloud.events.base import Cause, Event, parse_subject, subject
from ucloud.events.codec import AGGREGATES, BY_TAG, EVENT_TYPES, AnyEvent, decode, encode
from ucloud.events.host import *  # noqa: F403
from ucloud.events.order import *  # noqa: F403
from ucloud.events.resources import *  # noqa: F403
from ucloud.events.stored import Stored
from ucloud.events.types import (
    NOTHING,
    Ipam,
    Nic,
    NicNetwork,
    Resolved,
    Resources,
    RestartPolicy,
    StoreKind,
    VmSpec,
)
from ucloud.events.vm import *  # noqa: F403

__all__ = [
    "AGGREGATES",
    "BY_TAG",
    "EVENT_TYPES",
    "NOTHING",
    "AnyEvent",
    "Cause",
    "Event",
    "Ipam",
    "Nic",
    "NicNetwork",
    "Resolved",
    "Resources",
    "RestartPolicy",
    "StoreKind",
    "Stored",
    "VmSpec",
    "decode",
    "encode",
    "parse_subject",
    "subject",
]
__all__ += [cls.__name__ for cls in EVENT_TYPES]
