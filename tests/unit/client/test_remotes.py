from __future__ import annotations

from pathlib import Path

import pytest

from ucloud.client.remotes import (
    Remote,
    Remotes,
    chosen,
    load_remotes,
    login_path,
    save_remotes,
    with_remote,
    without_remote,
)
from ucloud.errors import ConfigError, InputError

TWO = Remotes(current="a", remotes={"a": Remote(url="http://a:1"), "b": Remote(url="http://b:1")})


@pytest.mark.parametrize(
    ("remotes", "flag", "env", "name"),
    [
        (TWO, "b", {"UCLOUD_REMOTE": "a"}, "b"),
        (TWO, None, {"UCLOUD_REMOTE": "b"}, "b"),
        (TWO, None, {}, "a"),
        (Remotes(), None, {}, "default"),
        (TWO, "default", {}, "default"),
    ],
)
def test_the_remote_is_the_flag_then_the_variable_then_the_current(
    remotes: Remotes, flag: str | None, env: dict[str, str], name: str
) -> None:
    assert chosen(remotes, flag, env) == name


def test_an_unknown_remote_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="ucloud remote list"):
        chosen(TWO, "c", {})


def test_default_keeps_the_old_login_file_and_names_are_checked(tmp_path: Path) -> None:
    assert login_path(tmp_path, "default") == tmp_path / "credentials.json"
    assert login_path(tmp_path, "b") == tmp_path / "logins" / "b.json"
    with pytest.raises(InputError):
        login_path(tmp_path, "../x")


def test_remotes_round_trip_and_removing_the_current_falls_back_to_default(
    tmp_path: Path,
) -> None:
    assert load_remotes(tmp_path) == Remotes()
    save_remotes(tmp_path, with_remote(TWO, "c", "http://c:1"))
    loaded = load_remotes(tmp_path)
    assert sorted(loaded.remotes) == ["a", "b", "c"]
    assert (tmp_path / "remotes.json").stat().st_mode & 0o077 == 0
    assert without_remote(loaded, "a").current == "default"
    assert without_remote(loaded, "b").current == "a"
