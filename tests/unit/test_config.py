from __future__ import annotations

from pathlib import Path

import pytest

from ucloud.config import load
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
