"""The projection's pure parts: each rule as a table, the fold into transactions, and
properties (batch splits and restarts change nothing; live equals rebuild)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.events import Event, Nic, Resources, encode
from ucloud.projections.apply import apply, changes
from ucloud.projections.ops import Delete, Put
from ucloud.projections.projector import Projection, Txn
from ucloud.projections.rebuild import compare
from ucloud.projections.views import (
    FileView,
    HostView,
    ImageView,
    KeyView,
    NetView,
    NicView,
    PoisonView,
    UserView,
    Value,
    VmView,
    encode_value,
    is_projected,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SMALL = Resources(cpu=1, ram_mib=512, ssd_mib=1024)
HOST_CAPACITY = Resources(cpu=16, ram_mib=65536, ssd_mib=1 << 20)
MAC = "02:00:00:00:00:01"
ADDRESS = "2001:db8:0:1:0:ff:fe00:1"  # MAC in 2001:db8:0:1::/64


def env(n: int) -> dict[str, Any]:
    return {"id": f"e{n}", "at": T0 + timedelta(seconds=n), "actor": "system:test"}


def vm_requested(n: int = 1, vm: str = "v1", name: str = "web", owner: str = "alice",
                 nics: tuple[Nic, ...] = (Nic(network="n1", mac=MAC),)) -> ev.VmRequested:
    return ev.VmRequested(**env(n), vm=vm, owner=owner, name=name, spec=SMALL, image="img",
                          nics=nics, keys=("k1",))


NET_REQUESTED = ev.NetRequested(**env(0), net="n1", owner="alice", name="lan", ipam="auto")
NET_CREATED = ev.NetCreated(**env(0), net="n1", vni=100, prefix="2001:db8:0:1::/64", ipam="auto")
HOST_REGISTERED = ev.HostRegistered(**env(0), host="h1", capacity=HOST_CAPACITY, address="::1")


def fold(events: Iterable[Event]) -> dict[str, Value]:
    state: dict[str, Value] = {}
    for event in events:
        for key, value in changes(state, event):
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
    return state


NET_STATE = [NET_REQUESTED, NET_CREATED]
VM_STATE = [*NET_STATE, vm_requested()]
V1 = fold(VM_STATE)["vm/v1"]
assert isinstance(V1, VmView)


def vm(**fields: Any) -> VmView:
    return msgspec.structs.replace(V1, **fields)


HOST = HostView(id="h1", capacity=HOST_CAPACITY, used=ev.NOTHING, address="::1",
                registered_at=T0)
PLACED = ev.HostVmPlaced(**env(5), host="h1", vm="v1", resources=SMALL)
HOST_WITH_V1 = msgspec.structs.replace(HOST, used=SMALL, vms=("v1",), reserved={"v1": SMALL})
NET = NetView(id="n1", owner="alice", name="lan", ipam="auto", status="requested",
              created_at=T0)
NET_UP = msgspec.structs.replace(NET, status="created", vni=100, prefix="2001:db8:0:1::/64")
IMAGE_REQUESTED = ev.ImageRequested(**env(0), image="i1", owner="alice", name="deb",
                                    file="f1")
IMAGE = ImageView(id="i1", owner="alice", name="deb", file="f1", store="fs", public=False,
                  status="requested", created_at=T0)
UPLOADED = ev.FileUploaded(**env(0), file="f1", owner="alice", name="deb.raw", size=10,
                           sha256="ab")
FILE = FileView(id="f1", owner="alice", name="deb.raw", size=10, sha256="ab", uploaded_at=T0)
USER_CREATED = ev.UserCreated(**env(0), user="alice", realm="users")
KEY = KeyView(id="k1", name="laptop", public_key="ssh-ed25519 AAAA")
USER = UserView(name="alice", realm="users", keys=(), created_at=T0)
KEY_ADDED = ev.UserKeyAdded(**env(1), user="alice", key="k1", name="laptop",
                            public_key="ssh-ed25519 AAAA")


@dataclass(frozen=True)
class Case:
    name: str
    history: list[Event]
    event: Event
    expected: dict[str, Value | None]


def t(n: int) -> datetime:
    return T0 + timedelta(seconds=n)


CASES = [
    # vm lifecycle
    Case("vm requested on a /64 network gets its EUI-64 address and every index",
         NET_STATE, vm_requested(), {
             "vm/v1": VmView(id="v1", owner="alice", name="web", spec=SMALL, image="img",
                             status="requested",
                             nics=(NicView(network="n1", mac=MAC, address=ADDRESS),),
                             keys=("k1",), created_at=t(1), updated_at=t(1)),
             "idx/owner/alice/vm/v1": "", "idx/name/alice/vm/web": "v1",
             f"idx/mac/{MAC}": "v1", "idx/net/n1/v1": ""}),
    Case("a network without a prefix gives no address; MACs are normalized",
         [NET_REQUESTED], vm_requested(nics=(Nic(network="n1", mac="02-00-00-00-00-0A"),)), {
             "vm/v1": vm(nics=(NicView(network="n1", mac="02:00:00:00:00:0a"),)),
             "idx/owner/alice/vm/v1": "", "idx/name/alice/vm/web": "v1",
             "idx/mac/02:00:00:00:00:0a": "v1", "idx/net/n1/v1": ""}),
    Case("a second vm.requested for the same VM changes nothing", VM_STATE,
         vm_requested(9, name="other"), {}),
    Case("scheduled", VM_STATE, ev.VmScheduled(**env(2), vm="v1", host="h1"),
         {"vm/v1": vm(status="scheduled", host="h1", updated_at=t(2))}),
    Case("scheduling failed keeps the reason", VM_STATE,
         ev.VmSchedulingFailed(**env(2), vm="v1", reason="no host has 1 cpu", resource="cpu"),
         {"vm/v1": vm(status="failed", reason="no host has 1 cpu", updated_at=t(2))}),
    Case("start requested", VM_STATE, ev.VmStartRequested(**env(2), vm="v1"),
         {"vm/v1": vm(status="starting", updated_at=t(2))}),
    Case("stop requested", VM_STATE, ev.VmStopRequested(**env(2), vm="v1"),
         {"vm/v1": vm(status="stopping", updated_at=t(2))}),
    Case("delete requested", VM_STATE, ev.VmDeleteRequested(**env(2), vm="v1"),
         {"vm/v1": vm(status="deleting", updated_at=t(2))}),
    Case("migration requested", VM_STATE, ev.VmMigrationRequested(**env(2), vm="v1"),
         {"vm/v1": vm(status="migrating", updated_at=t(2))}),
    Case("started", VM_STATE, ev.VmStarted(**env(2), vm="v1", host="h1"),
         {"vm/v1": vm(status="running", host="h1", updated_at=t(2))}),
    Case("stopped", VM_STATE, ev.VmStopped(**env(2), vm="v1", host="h1", reason="asked"),
         {"vm/v1": vm(status="stopped", host="h1", reason="asked", updated_at=t(2))}),
    Case("crashed", VM_STATE, ev.VmCrashed(**env(2), vm="v1", host="h1", reason="oom"),
         {"vm/v1": vm(status="crashed", host="h1", reason="oom", updated_at=t(2))}),
    Case("lost", VM_STATE, ev.VmLost(**env(2), vm="v1", host="h1", reason="host down"),
         {"vm/v1": vm(status="lost", host="h1", reason="host down", updated_at=t(2))}),
    Case("migrated moves the host", [*VM_STATE, ev.VmStarted(**env(2), vm="v1", host="h1")],
         ev.VmMigrated(**env(3), vm="v1", from_host="h1", to_host="h2"),
         {"vm/v1": vm(status="running", host="h2", updated_at=t(3))}),
    Case("migration failed: running where it was, with the reason",
         [*VM_STATE, ev.VmStarted(**env(2), vm="v1", host="h1")],
         ev.VmMigrationFailed(**env(3), vm="v1", reason="timeout"),
         {"vm/v1": vm(status="running", host="h1", reason="timeout", updated_at=t(3))}),
    Case("evacuated: scheduled on the new host", VM_STATE,
         ev.VmEvacuated(**env(3), vm="v1", from_host="h1", to_host="h2"),
         {"vm/v1": vm(status="scheduled", host="h2", updated_at=t(3))}),
    Case("deleted removes the view and every index", VM_STATE,
         ev.VmDeleted(**env(4), vm="v1", host="h1"),
         {"vm/v1": None, "idx/owner/alice/vm/v1": None, "idx/name/alice/vm/web": None,
          f"idx/mac/{MAC}": None, "idx/net/n1/v1": None}),
    Case("deleted leaves a name index that points at another VM",
         [*VM_STATE, vm_requested(2, vm="v2", nics=())],
         ev.VmDeleted(**env(4), vm="v1"),
         {"vm/v1": None, "idx/owner/alice/vm/v1": None, f"idx/mac/{MAC}": None,
          "idx/net/n1/v1": None}),
    Case("events of an unknown VM change nothing", [], ev.VmStarted(**env(2), vm="v9", host="h"),
         {}),
    Case("deleting an unknown VM changes nothing", [], ev.VmDeleted(**env(2), vm="v9"), {}),
    # hosts and the capacity ledger
    Case("host registered", [], HOST_REGISTERED, {"host/h1": HOST}),
    Case("re-registration keeps the ledger", [HOST_REGISTERED, PLACED],
         ev.HostRegistered(**env(6), host="h1", capacity=SMALL + SMALL, router=True),
         {"host/h1": msgspec.structs.replace(HOST_WITH_V1, capacity=SMALL + SMALL,
                                             address="", router=True)}),
    Case("drained", [HOST_REGISTERED], ev.HostDrained(**env(1), host="h1"),
         {"host/h1": msgspec.structs.replace(HOST, drained=True)}),
    Case("undrained", [HOST_REGISTERED, ev.HostDrained(**env(1), host="h1")],
         ev.HostUndrained(**env(2), host="h1"), {"host/h1": HOST}),
    Case("down", [HOST_REGISTERED], ev.HostDown(**env(1), host="h1"),
         {"host/h1": msgspec.structs.replace(HOST, state="down")}),
    Case("up", [HOST_REGISTERED, ev.HostDown(**env(1), host="h1")],
         ev.HostUp(**env(2), host="h1"), {"host/h1": HOST}),
    Case("vm placed reserves", [HOST_REGISTERED], PLACED, {"host/h1": HOST_WITH_V1}),
    Case("vm placed twice reserves once", [HOST_REGISTERED, PLACED],
         ev.HostVmPlaced(**env(6), host="h1", vm="v1", resources=SMALL), {}),
    Case("vm released frees what was reserved", [HOST_REGISTERED, PLACED],
         ev.HostVmReleased(**env(6), host="h1", vm="v1"), {"host/h1": HOST}),
    Case("releasing a VM the host does not hold changes nothing", [HOST_REGISTERED],
         ev.HostVmReleased(**env(6), host="h1", vm="v1"), {}),
    Case("placing on an unknown host changes nothing", [], PLACED, {}),
    Case("host commands change no view", [HOST_REGISTERED],
         ev.HostVmStop(**env(6), host="h1", vm="v1"), {}),
    # networks
    Case("net requested", [], NET_REQUESTED,
         {"net/n1": NET, "idx/owner/alice/net/n1": "", "idx/name/alice/net/lan": "n1"}),
    Case("net created", [NET_REQUESTED], NET_CREATED,
         {"net/n1": NET_UP, "idx/vni/100": "n1"}),
    Case("net failed", [NET_REQUESTED], ev.NetFailed(**env(1), net="n1", reason="no vni"),
         {"net/n1": msgspec.structs.replace(NET, status="failed", reason="no vni")}),
    Case("net delete requested", NET_STATE, ev.NetDeleteRequested(**env(1), net="n1"),
         {"net/n1": msgspec.structs.replace(NET_UP, status="deleting")}),
    Case("net deleted", NET_STATE, ev.NetDeleted(**env(1), net="n1"),
         {"net/n1": None, "idx/owner/alice/net/n1": None, "idx/name/alice/net/lan": None,
          "idx/vni/100": None}),
    Case("created for an unknown net changes nothing", [], NET_CREATED, {}),
    Case("allocator bookkeeping changes no view", [],
         ev.PoolVniAllocated(**env(1), pool="vni", vni=100, net="n1"), {}),
    # images and files
    Case("image requested", [], IMAGE_REQUESTED,
         {"image/i1": IMAGE, "idx/owner/alice/image/i1": "", "idx/name/alice/image/deb": "i1"}),
    Case("image created", [IMAGE_REQUESTED],
         ev.ImageCreated(**env(1), image="i1", size=5, checksum="cc"),
         {"image/i1": msgspec.structs.replace(IMAGE, status="created", size=5, checksum="cc")}),
    Case("image failed", [IMAGE_REQUESTED], ev.ImageFailed(**env(1), image="i1", reason="x"),
         {"image/i1": msgspec.structs.replace(IMAGE, status="failed", reason="x")}),
    Case("image delete requested", [IMAGE_REQUESTED],
         ev.ImageDeleteRequested(**env(1), image="i1"),
         {"image/i1": msgspec.structs.replace(IMAGE, status="deleting")}),
    Case("image deleted", [IMAGE_REQUESTED], ev.ImageDeleted(**env(1), image="i1"),
         {"image/i1": None, "idx/owner/alice/image/i1": None,
          "idx/name/alice/image/deb": None}),
    Case("file uploaded", [], UPLOADED,
         {"file/f1": FILE, "idx/owner/alice/file/f1": "", "idx/name/alice/file/deb.raw": "f1"}),
    Case("file uploaded again under a new name moves its name index", [UPLOADED],
         ev.FileUploaded(**env(1), file="f1", owner="alice", name="new", size=1, sha256="cd"),
         {"idx/owner/alice/file/f1": "", "idx/name/alice/file/deb.raw": None,
          "file/f1": FileView(id="f1", owner="alice", name="new", size=1, sha256="cd",
                              uploaded_at=t(1)),
          "idx/name/alice/file/new": "f1"}),
    Case("file deleted", [UPLOADED], ev.FileDeleted(**env(1), file="f1"),
         {"file/f1": None, "idx/owner/alice/file/f1": None,
          "idx/name/alice/file/deb.raw": None}),
    # users and keys
    Case("user created", [], USER_CREATED, {"user/alice": USER}),
    Case("user created twice keeps the first", [USER_CREATED],
         ev.UserCreated(**env(1), user="alice", realm="admin"), {}),
    Case("key added", [USER_CREATED], KEY_ADDED,
         {"user/alice": msgspec.structs.replace(USER, keys=(KEY,))}),
    Case("key added again under the same id replaces it", [USER_CREATED, KEY_ADDED],
         ev.UserKeyAdded(**env(2), user="alice", key="k1", name="new", public_key="ssh-rsa B"),
         {"user/alice": msgspec.structs.replace(
             USER, keys=(KeyView(id="k1", name="new", public_key="ssh-rsa B"),))}),
    Case("key removed", [USER_CREATED, KEY_ADDED],
         ev.UserKeyRemoved(**env(2), user="alice", key="k1"), {"user/alice": USER}),
    Case("removing an unknown key changes nothing", [USER_CREATED],
         ev.UserKeyRemoved(**env(2), user="alice", key="k9"), {}),
    Case("user deleted", [USER_CREATED, KEY_ADDED], ev.UserDeleted(**env(2), user="alice"),
         {"user/alice": None}),
    Case("keys of an unknown user change nothing", [], KEY_ADDED, {}),
    Case("user disabled", [USER_CREATED], ev.UserDisabled(**env(1), user="alice"),
         {"user/alice": msgspec.structs.replace(USER, disabled=True)}),
    Case("disabling a disabled user changes nothing",
         [USER_CREATED, ev.UserDisabled(**env(1), user="alice")],
         ev.UserDisabled(**env(2), user="alice"), {}),
    Case("user enabled", [USER_CREATED, ev.UserDisabled(**env(1), user="alice")],
         ev.UserEnabled(**env(2), user="alice"), {"user/alice": USER}),
    Case("quota set", [USER_CREATED],
         ev.UserQuotaSet(**env(1), user="alice", limits=ev.QuotaLimits(vms=3)),
         {"user/alice": msgspec.structs.replace(USER, quota=ev.QuotaLimits(vms=3))}),
    Case("an admission changes no view", [USER_CREATED],
         ev.UserAdmitted(**env(1), user="alice", kind="net", resource="n1"), {}),
    Case("a user made again under a deleted name starts afresh",
         [USER_CREATED, KEY_ADDED, ev.UserDisabled(**env(2), user="alice"),
          ev.UserDeleted(**env(3), user="alice")],
         ev.UserCreated(**env(4), user="alice", realm="users"),
         {"user/alice": UserView(name="alice", realm="users", keys=(), created_at=env(4)["at"])}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule(case: Case) -> None:
    state = fold(case.history)
    assert dict(changes(state, case.event)) == case.expected
    assert all(is_projected(key) for key in case.expected)


def test_apply_encodes_deterministically() -> None:
    state = fold([HOST_REGISTERED, PLACED])
    placed_b = ev.HostVmPlaced(**env(7), host="h1", vm="a0", resources=SMALL)
    ops = apply(state, placed_b)
    assert len(ops) == 1 and isinstance(ops[0], Put)
    assert ops[0].key == "host/h1"
    decoded = msgspec.json.decode(ops[0].value)
    assert list(decoded["reserved"]) == ["a0", "v1"]  # sorted, not insertion order
    assert decoded["vms"] == ["v1", "a0"]
    assert ops[0].value == encode_value(HOST_WITH_V1.__class__(**{
        **msgspec.structs.asdict(HOST_WITH_V1), "used": SMALL + SMALL, "vms": ("v1", "a0"),
        "reserved": {"v1": SMALL, "a0": SMALL}}))
    assert apply(state, ev.VmDeleted(**env(8), vm="v9")) == []
    deleted = apply(fold(VM_STATE), ev.VmDeleted(**env(8), vm="v1"))
    assert all(isinstance(op, Delete) for op in deleted) and len(deleted) == 5


# --- the fold into transactions ---------------------------------------------------------


@dataclass(frozen=True)
class Rec:
    seq: int
    subject: str
    data: bytes


def records(events: Iterable[Event | bytes], first: int = 1) -> list[Rec]:
    out = []
    for seq, item in enumerate(events, first):
        if isinstance(item, bytes):
            out.append(Rec(seq, "ucloud.evt.vm.x.bad", item))
        else:
            out.append(Rec(seq, item.subject, encode(item)))
    return out


def commit(
    kv: dict[str, bytes], txns: list[Txn], max_ops: int | None = None, prefix: str = ""
) -> None:
    """What etcd does with the writer's transactions (and what it would refuse)."""
    for txn in txns:
        keys = [op.key for op in txn.ops]
        assert len(keys) == len(set(keys)), "etcd refuses a key twice in one transaction"
        if max_ops is not None:
            assert len(txn.ops) + 1 <= max_ops or txn.applied + len(txn.poisoned) <= 1
        for op in txn.ops:
            if isinstance(op, Put):
                kv[op.key] = op.value
            else:
                kv.pop(op.key, None)
        kv[f"{prefix}_checkpoint/main"] = str(txn.checkpoint).encode()


def test_fold_skips_applied_records_and_records_poison() -> None:
    projection = Projection(prefix="/p/")
    recs = records([*NET_STATE, b"{not json", b'{"type":"vm.nope"}', vm_requested(3),
                    b'{"type":"vm.started","id":1}'])
    txns = projection.fold(recs, max_ops=128)
    assert len(txns) == 1 and txns[0].checkpoint == 6 and projection.checkpoint == 6
    assert txns[0].applied == 3 and [s for s, _ in txns[0].poisoned] == [3, 4, 6]
    kv: dict[str, bytes] = {}
    commit(kv, txns, prefix="/p/")
    poison = msgspec.json.decode(kv["/p/_poison/4"], type=PoisonView)
    assert poison.seq == 4 and poison.seen_by == "projector" and "vm.nope" in poison.error
    assert poison.subject == "ucloud.evt.vm.x.bad"
    assert "vm/v1" in projection.views
    assert projection.fold(recs, max_ops=128) == []  # everything is at or below the checkpoint


def test_events_that_change_nothing_still_move_the_checkpoint() -> None:
    projection = Projection()
    txns = projection.fold(records([ev.VmStarted(**env(1), vm="v9", host="h")]), max_ops=2)
    assert [(t.ops, t.checkpoint, t.applied) for t in txns] == [([], 1, 1)]


def test_transactions_stay_within_the_limit_and_hold_whole_events() -> None:
    projection = Projection()
    events = [*NET_STATE, *(vm_requested(10 + i, vm=f"v{i}", name=f"w{i}") for i in range(20))]
    txns = projection.fold(records(events), max_ops=12)
    assert all(len(t.ops) <= 11 for t in txns)
    assert sum(t.applied for t in txns) == len(events)
    assert [t.checkpoint for t in txns] == sorted({t.checkpoint for t in txns})
    whole = {
        sum(1 for op in t.ops if op.key.startswith("vm/")) * 5 for t in txns if t.checkpoint > 2
    }
    assert whole <= {0, 5, 10}  # five keys per VM, never split across transactions


def test_an_event_larger_than_a_transaction_is_split_and_checkpointed_last() -> None:
    nics = tuple(Nic(network=f"n{i}", mac=f"02:00:00:00:00:{i:02x}") for i in range(10))
    projection = Projection()
    txns = projection.fold(records([vm_requested(1, nics=nics)]), max_ops=5)
    assert [t.checkpoint for t in txns] == [0] * (len(txns) - 1) + [1]
    assert all(len(t.ops) <= 4 for t in txns)
    kv: dict[str, bytes] = {}
    commit(kv, txns)
    assert len(kv) == 3 + 2 * 10 + 1


def test_from_items_restores_what_the_fold_wrote() -> None:
    live = Projection(prefix="/p/")
    kv: dict[str, bytes] = {"/p/alive/h1": b"", "/p/user/alice/totp": b"secret"}
    commit(kv, live.fold(records([*VM_STATE, USER_CREATED, b"bad"]), max_ops=64), prefix="/p/")
    restored, stored = Projection.from_items(kv.items(), "/p/")
    assert stored == b"5" and restored.checkpoint == 5
    assert restored.views == live.views


# --- properties -------------------------------------------------------------------------

VMS = [f"v{i}" for i in range(4)]
HOSTS = ["h0", "h1"]
NETS = ["n0", "n1"]
USERS = ["alice", "bob"]


def _vm_lifecycle(draw: st.DrawFn, vm_id: str) -> list[Callable[[int], Event | bytes]]:
    owner = draw(st.sampled_from(USERS))
    net = draw(st.sampled_from(NETS))
    host = draw(st.sampled_from(HOSTS))
    mac = f"02:00:00:00:01:{VMS.index(vm_id):02x}"
    steps: list[Callable[[int], Event | bytes]] = [
        lambda n: ev.VmRequested(**env(n), vm=vm_id, owner=owner, name=f"web-{vm_id}",
                                 spec=SMALL, image="img", nics=(Nic(network=net, mac=mac),)),
    ]
    if draw(st.booleans()):
        steps.append(lambda n: ev.VmSchedulingFailed(**env(n), vm=vm_id, reason="full"))
        return steps
    steps += [
        lambda n: ev.HostVmPlaced(**env(n), host=host, vm=vm_id, resources=SMALL),
        lambda n: ev.VmScheduled(**env(n), vm=vm_id, host=host),
        lambda n: ev.VmStarted(**env(n), vm=vm_id, host=host),
    ]
    extra = {
        "stop": lambda n: ev.VmStopRequested(**env(n), vm=vm_id),
        "stopped": lambda n: ev.VmStopped(**env(n), vm=vm_id, host=host),
        "crash": lambda n: ev.VmCrashed(**env(n), vm=vm_id, host=host, reason="oom"),
        "migrated": lambda n: ev.VmMigrated(**env(n), vm=vm_id, from_host=host, to_host="h1"),
        "poison": lambda n: b'{"type":"vm.started","vm":1}',
    }
    steps += [extra[k] for k in draw(st.lists(st.sampled_from(sorted(extra)), max_size=3))]
    if draw(st.booleans()):
        steps += [
            lambda n: ev.VmDeleteRequested(**env(n), vm=vm_id),
            lambda n: ev.VmDeleted(**env(n), vm=vm_id, host=host),
            lambda n: ev.HostVmReleased(**env(n), host=host, vm=vm_id),
        ]
    return steps


@st.composite
def histories(draw: st.DrawFn) -> list[Rec]:
    """Valid lifecycles of hosts, nets, users and VMs, interleaved at random."""
    lanes: list[list[Callable[[int], Event | bytes]]] = []
    lanes.append([lambda n, h=h: ev.HostRegistered(**env(n), host=h, capacity=HOST_CAPACITY)
                  for h in HOSTS] + [lambda n: ev.HostDrained(**env(n), host="h0")])
    lanes.append([
        step for i, net in enumerate(NETS) for step in (
            lambda n, net=net: ev.NetRequested(**env(n), net=net, owner="alice", name=net),
            lambda n, net=net, i=i: ev.NetCreated(**env(n), net=net, vni=100 + i,
                                                  prefix=f"2001:db8:{i}::/64"),
        )
    ])
    lanes.append([
        lambda n: ev.UserCreated(**env(n), user="alice", realm="users"),
        lambda n: ev.UserKeyAdded(**env(n), user="alice", key="k1", name="a", public_key="p"),
        lambda n: ev.UserCreated(**env(n), user="bob", realm="users"),
        lambda n: ev.UserKeyRemoved(**env(n), user="alice", key="k1"),
    ])
    lanes += [_vm_lifecycle(draw, vm_id) for vm_id in VMS[: draw(st.integers(1, len(VMS)))]]
    order = draw(st.permutations([i for i, lane in enumerate(lanes) for _ in lane]))
    position = [0] * len(lanes)
    items: list[Event | bytes] = []
    for n, lane in enumerate(order, 1):
        items.append(lanes[lane][position[lane]](n))
        position[lane] += 1
    return records(items)


def split(recs: list[Rec], cuts: list[int]) -> list[list[Rec]]:
    bounds = sorted({c % (len(recs) + 1) for c in cuts} | {0, len(recs)})
    return [recs[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def rebuilt(recs: list[Rec]) -> dict[str, bytes]:
    kv: dict[str, bytes] = {}
    commit(kv, Projection().fold(recs, max_ops=100_000))
    return kv


@settings(max_examples=150, deadline=None)
@given(recs=histories(), cuts=st.lists(st.integers(0, 200), max_size=8),
       max_ops=st.integers(2, 20))
def test_batch_splits_change_nothing(recs: list[Rec], cuts: list[int], max_ops: int) -> None:
    projection = Projection()
    kv: dict[str, bytes] = {}
    for batch in split(recs, cuts):
        commit(kv, projection.fold(batch, max_ops=max_ops), max_ops)
    assert kv == rebuilt(recs)


@settings(max_examples=150, deadline=None)
@given(recs=histories(), cuts=st.lists(st.integers(0, 200), max_size=8),
       lost=st.lists(st.booleans(), max_size=8), max_ops=st.integers(2, 20))
def test_live_with_restarts_equals_rebuild(
    recs: list[Rec], cuts: list[int], lost: list[bool], max_ops: int
) -> None:
    """A projector that crashes before committing, restarts from what is stored and gets
    the log again from an earlier point ends where a rebuild ends."""
    kv: dict[str, bytes] = {}
    projection = Projection()
    for i, batch in enumerate(split(recs, cuts)):
        txns = projection.fold(recs[: batch[-1].seq] if batch else [], max_ops=max_ops)
        if i < len(lost) and lost[i]:  # crashed before the commit: restart from the store
            projection, _ = Projection.from_items(kv.items(), "")
            continue
        commit(kv, txns, max_ops)
    commit(kv, projection.fold(recs, max_ops=max_ops), max_ops)
    expected = rebuilt(recs)
    assert kv == expected
    assert compare(
        {k: v for k, v in kv.items() if is_projected(k)},
        {k: v for k, v in expected.items() if is_projected(k)},
    ) == []
    hosts = [msgspec.json.decode(v, type=HostView) for k, v in kv.items() if k.startswith("host/")]
    for host in hosts:  # the ledger adds up
        total = ev.NOTHING
        for reserved in host.reserved.values():
            total = total + reserved
        assert host.used == total and set(host.vms) == set(host.reserved)
