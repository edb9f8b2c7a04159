from __future__ import annotations

from pathlib import Path

import pytest

from ucloud.config import Config, decode, load
from ucloud.errors import ConfigError


def test_file_and_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "ucloud.toml"
    path.write_text('data_dir = "/srv/ucloud"\n[nats]\nreplicas = 3\n')
    config = load(path, {"UCLOUD_NATS__URL": "nats://[::1]:4222", "UCLOUD_URL": "http://x"})
    assert config.data_dir == "/srv/ucloud"
    assert config.nats.replicas == 3
    assert config.nats.url == "nats://[::1]:4222"


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ("[nats]\nreplicas = 'three'\n", {}, "nats.replicas"),
        ("[nats]\nreplica = 3\n", {}, "nats.replica"),
        ("[nats]\nsync = 'sometimes'\n", {}, "nats.sync"),
        ("colour = 'blue'\n", {}, "colour"),
        ("", {"UCLOUD_BOGUS__X": "1"}, "UCLOUD_BOGUS__X"),
        ("", {"UCLOUD_NATS__NOPE": "1"}, "nats.nope"),
        ("[nats\n", {}, "ucloud.toml"),
    ],
)
def test_a_wrong_key_or_type_names_the_key(
    tmp_path: Path, text: str, env: dict[str, str], key: str
) -> None:
    path = tmp_path / "ucloud.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path, env)
    assert key in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load(tmp_path / "absent.toml", {})


def _setting(config: Config, key: str) -> object:
    section, _, name = key.rpartition(".")
    return getattr(getattr(config, section) if section else config, name)


@pytest.mark.parametrize(
    ("variable", "text", "key", "expected"),
    [
        ("UCLOUD_HOST__ID", "42", "host.id", "42"),  # a str field takes the text itself
        ("UCLOUD_HOST__ID", "true", "host.id", "true"),
        ("UCLOUD_DATA_DIR", "2024", "data_dir", "2024"),
        ("UCLOUD_GATEWAY__LISTEN", "[::1]:9090", "gateway.listen", "[::1]:9090"),
        ("UCLOUD_SCHEDULER__POLICY", "pack", "scheduler.policy", "pack"),  # a str Literal
        ("UCLOUD_NATS__REPLICAS", "3", "nats.replicas", 3),
        ("UCLOUD_HOST__CPU", "4", "host.cpu", 4),  # int | None
        ("UCLOUD_NATS__DUPLICATE_WINDOW_S", "5", "nats.duplicate_window_s", 5.0),
        ("UCLOUD_ETCD__ENDPOINTS", '["a", "b"]', "etcd.endpoints", ["a", "b"]),
        ("UCLOUD_IMAGES__BUILTIN", '["tiny"]', "images.builtin", ["tiny"]),
        ("UCLOUD_HOST__ROUTER", "true", "host.router", True),
        ("UCLOUD_IMAGES__SHARED", "false", "images.shared", False),
    ],
)
def test_an_override_is_read_as_its_fields_type(
    variable: str, text: str, key: str, expected: object
) -> None:
    assert _setting(load(None, {variable: text, "UCLOUD_CONFIG": "/dev/null"}), key) == expected


@pytest.mark.parametrize(
    ("variable", "text", "key"),
    [
        ("UCLOUD_NATS__NOPE", "1", "nats.nope"),  # an unknown key
        ("UCLOUD_HOST__IDENT", "h1", "host.ident"),
        ("UCLOUD_NOSECTION__ID", "h1", "UCLOUD_NOSECTION__ID"),
        ("UCLOUD_NATS__REPLICAS", "three", "nats.replicas"),  # a wrong type
        ("UCLOUD_NATS__REPLICAS", '"3"', "nats.replicas"),
        ("UCLOUD_HOST__ROUTER", "yes", "host.router"),
        ("UCLOUD_ETCD__ENDPOINTS", "a", "etcd.endpoints"),
        ("UCLOUD_HOST__ID", "no spaces", "host.id"),  # a str that breaks the field's pattern
    ],
)
def test_a_wrong_override_is_refused_naming_the_key(variable: str, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, {variable: text, "UCLOUD_CONFIG": "/dev/null"})
    assert info.value.key == key


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ("/d/files", "/d/images", "/d/disks", "/d/vms")),
        (
            {"images": {"files_dir": "/f", "dir": "/i", "disks_dir": "/k"},
             "host": {"runtime_dir": "/r"}},
            ("/f", "/i", "/k", "/r"),
        ),
    ],
)
def test_paths_default_under_data_dir(
    settings: dict[str, dict[str, str]], expected: tuple[str, ...]
) -> None:
    paths = decode({"data_dir": "/d", **settings}).paths
    assert tuple(map(str, (paths.files, paths.images, paths.disks, paths.runtime))) == expected
    assert (str(paths.data), str(paths.builtin_images)) == ("/d", "/d/images/builtin")


def test_relative_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = decode({"data_dir": "data", "images": {"files_dir": "up"}}).paths
    assert (paths.data, paths.files) == (tmp_path / "data", tmp_path / "up")
