"""filescan's decisions (pure) and its look at a directory (a temporary one)."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import events as ev
from ucloud.errors import InputError
from ucloud.files import Version, deletion_events, file_id, file_path, last_upload, upload_events
from ucloud.handlers.builtins import builtin_image_id, needs_request
from ucloud.handlers.filescan import Seen, complete, hash_file, observe, stale_temporaries
from ucloud.ids import new_id

AT = datetime(2026, 1, 1, tzinfo=UTC)


def env() -> dict[str, Any]:
    ident = new_id()
    return {"id": ident, "at": AT, "actor": "t", "causation": ident, "correlation": ident}


def uploaded(size: int = 5, sha: str = "a", mtime: int = 1) -> ev.FileUploaded:
    return ev.FileUploaded(
        **env(), file=file_id("alice", "f"), owner="alice", name="f", size=size, sha256=sha,
        mtime_ns=mtime,
    )


def deleted() -> ev.FileDeleted:
    return ev.FileDeleted(**env(), file=file_id("alice", "f"))


V = Version(5, "a", 99)


@pytest.mark.parametrize(
    ("history", "appends"),
    [
        ([], True),
        ([uploaded()], False),  # same content: the mtime alone is no new version
        ([uploaded(sha="b")], True),
        ([uploaded(size=6)], True),
        ([uploaded(), deleted()], True),
        ([uploaded(sha="b"), uploaded()], False),
    ],
)
def test_an_upload_is_recorded_once_per_version(history: list[ev.Event], appends: bool) -> None:
    events = upload_events(history, "alice", "f", V, env())
    assert bool(events) == appends
    if appends:
        (event,) = events
        assert isinstance(event, ev.FileUploaded)
        assert (event.file, event.owner, event.name, event.size, event.sha256, event.mtime_ns) == (
            file_id("alice", "f"), "alice", "f", 5, "a", 99
        )


@pytest.mark.parametrize(
    ("history", "appends"),
    [([], False), ([uploaded()], True), ([uploaded(), deleted()], False)],
)
def test_a_deletion_is_recorded_only_for_a_present_file(
    history: list[ev.Event], appends: bool
) -> None:
    assert bool(deletion_events(history, "alice", "f", env())) == appends


def test_the_upload_in_effect_is_the_last_one_not_deleted_since() -> None:
    first, second = uploaded(sha="1"), uploaded(sha="2")
    assert last_upload([first, second]) == second
    assert last_upload([first, deleted()]) is None
    assert last_upload([first, deleted(), second]) == second


@given(st.text(min_size=1, max_size=20), st.text(min_size=1, max_size=20))
def test_file_ids_are_stable_and_distinct(a: str, b: str) -> None:
    assert file_id("alice", a) == file_id("alice", a)
    if a != b:
        assert file_id("alice", a) != file_id("alice", b)
    assert file_id("alice", a) != file_id("bob", a)


@pytest.mark.parametrize(
    ("before", "now", "now_ns", "whole"),
    [
        (None, Seen(5, 100, 1), 10_000, False),  # first look
        (Seen(4, 90, 1), Seen(5, 100, 1), 10_000, False),  # still growing
        (Seen(5, 100, 1), Seen(5, 100, 1), 10_000, True),
        (Seen(5, 100, 1), Seen(5, 100, 2), 10_000, False),  # replaced
        (Seen(5, 100, 1), Seen(5, 100, 1), 150, False),  # changed too recently
    ],
)
def test_a_file_is_whole_once_unchanged_across_looks_and_settled(
    before: Seen | None, now: Seen, now_ns: int, whole: bool
) -> None:
    assert complete(before, now, now_ns, settle_ns=100) is whole


def test_file_paths_stay_in_the_owners_directory(tmp_path: Path) -> None:
    assert file_path(tmp_path, "alice", "my.qcow2") == tmp_path / "alice" / "my.qcow2"
    for owner, name, field in (
        ("alice", "../bob/x", "name"),
        ("alice", "..", "name"),
        ("../alice", "x", "owner"),
        ("a/b", "x", "owner"),
    ):
        with pytest.raises(InputError) as caught:
            file_path(tmp_path, owner, name)
        assert caught.value.field == field
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "mallory").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="symlink"):
        file_path(tmp_path, "mallory", "x")


def test_observe_sees_regular_files_with_valid_names_only(tmp_path: Path) -> None:
    alice = tmp_path / "alice"
    alice.mkdir()
    (alice / "good.qcow2").write_bytes(b"x" * 10)
    (alice / ".upload-1").write_bytes(b"partial")
    (alice / "bad name").write_bytes(b"x")
    (alice / "link").symlink_to("/etc/passwd")
    (alice / "sub").mkdir()
    os.mkfifo(alice / "pipe")
    (tmp_path / "not an owner").mkdir()
    (tmp_path / "not an owner" / "x").write_bytes(b"x")
    found = observe(tmp_path)
    assert list(found) == [("alice", "good.qcow2")]
    assert found[("alice", "good.qcow2")].size == 10
    assert observe(tmp_path / "missing") == {}


def test_hash_file_gives_the_version_unless_the_file_changed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    st = path.stat()
    seen = Seen(st.st_size, st.st_mtime_ns, st.st_ino)
    assert hash_file(path, seen) == Version(5, hashlib.sha256(b"hello").hexdigest(), seen.mtime_ns)
    path.write_bytes(b"hello, world")
    assert hash_file(path, seen) is None
    assert hash_file(tmp_path / "gone", seen) is None


def test_a_builtin_image_is_requested_again_only_after_a_deletion() -> None:
    image = builtin_image_id("tiny")
    assert image == builtin_image_id("tiny") != builtin_image_id("debian-12")
    requested = ev.ImageRequested(
        **env(), image=image, owner="admin", name="tiny", file="f", public=True
    )
    gone = ev.ImageDeleted(**env(), image=image)
    assert needs_request([])
    assert not needs_request([requested])
    assert needs_request([requested, gone])
    assert not needs_request([requested, gone, requested])


def test_only_temporaries_left_untouched_for_long_are_stale(tmp_path: Path) -> None:
    alice = tmp_path / "alice"
    alice.mkdir()
    for name in (".upload-old", ".builtin-old", ".upload-fresh", "old.img", ".other"):
        (alice / name).write_bytes(b"x")
    for name in (".upload-old", ".builtin-old", "old.img", ".other"):
        os.utime(alice / name, ns=(0, 0))
    (alice / ".upload-link").symlink_to("/etc/passwd")
    now = (alice / ".upload-fresh").stat().st_mtime_ns + 10
    stale = stale_temporaries(tmp_path, now, max_age_ns=3600 * 10**9)
    assert sorted(p.name for p in stale) == [".builtin-old", ".upload-old"]
    assert stale_temporaries(tmp_path / "missing", now) == []
