from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ucloud.client.credentials import (
    DEFAULT_URL,
    Credentials,
    config_dir,
    load_credentials,
    remove_credentials,
    resolve_token,
    resolve_url,
    save_credentials,
)
from ucloud.client.upfile import UpInfo, write_up
from ucloud.errors import ConfigError, InputError, NotLoggedIn

STORED = Credentials(url="http://stored:1", token="stored-token", name="alice", realm="users")


@pytest.fixture
def up_dir(tmp_path: Path) -> Path:
    write_up(tmp_path, UpInfo(gateway="http://[::1]:9999", nats="nats://x", etcd=["x"]))
    return tmp_path


@pytest.mark.parametrize(
    ("flag", "env", "stored", "use_up", "url"),
    [
        ("http://flag:1/", {"UCLOUD_URL": "http://env:1"}, STORED, True, "http://flag:1"),
        (None, {"UCLOUD_URL": "http://env:1"}, STORED, True, "http://env:1"),
        (None, {}, STORED, True, "http://stored:1"),
        (None, {}, None, True, "http://[::1]:9999"),
        (None, {}, None, False, DEFAULT_URL),
        (None, {"UCLOUD_URL": ""}, None, False, DEFAULT_URL),
    ],
)
def test_url_order_flag_env_stored_data_dir_default(
    up_dir: Path,
    flag: str | None,
    env: dict[str, str],
    stored: Credentials | None,
    use_up: bool,
    url: str,
) -> None:
    assert resolve_url(flag, env, stored, up_dir if use_up else None) == url


@pytest.mark.parametrize(
    ("flag", "env", "source"),
    [("ftp://x", {}, "--url"), (None, {"UCLOUD_URL": "[::1]:8080"}, "UCLOUD_URL")],
)
def test_a_bad_url_names_where_it_came_from(
    flag: str | None, env: dict[str, str], source: str
) -> None:
    with pytest.raises(InputError) as info:
        resolve_url(flag, env, None, None)
    assert info.value.field == source


def test_a_data_dir_without_an_all_in_one_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="up.json not found"):
        resolve_url(None, {}, None, tmp_path)


def test_token_from_the_environment_wins() -> None:
    assert resolve_token({"UCLOUD_TOKEN": "env"}, STORED, "http://other:1") == "env"
    assert resolve_token({}, STORED, "http://stored:1") == "stored-token"


def test_no_token_is_not_logged_in() -> None:
    with pytest.raises(NotLoggedIn, match="UCLOUD_TOKEN is not set"):
        resolve_token({"UCLOUD_CONFIG_DIR": "/nowhere"}, None, DEFAULT_URL)


def test_a_stored_token_is_never_sent_to_another_gateway() -> None:
    with pytest.raises(NotLoggedIn, match="for http://stored:1, not http://other:1"):
        resolve_token({}, STORED, "http://other:1")


def test_config_dir() -> None:
    assert config_dir({"UCLOUD_CONFIG_DIR": "/c", "HOME": "/h"}) == Path("/c")
    assert config_dir({"HOME": "/h"}) == Path("/h/.config/ucloud")


def test_the_login_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "conf" / "ucloud"
    path = save_credentials(directory, STORED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert load_credentials(directory) == STORED
    assert json.loads(path.read_text())["url"] == "http://stored:1"
    path.chmod(0o644)  # an earlier, looser file is replaced by a private one
    save_credentials(directory, STORED)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in directory.iterdir()] == ["credentials.json"]
    assert "stored-token" not in repr(load_credentials(directory))


def test_load_and_remove(tmp_path: Path) -> None:
    assert load_credentials(tmp_path) is None
    assert remove_credentials(tmp_path) is False
    (tmp_path / "credentials.json").write_text("{")
    with pytest.raises(ConfigError, match="not a valid login"):
        load_credentials(tmp_path)
    assert remove_credentials(tmp_path) is True
    assert not (tmp_path / "credentials.json").exists()
