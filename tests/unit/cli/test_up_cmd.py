"""The pure parts of ``ucloud up``: the settings file it writes, the gateway URL."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ucloud import config as config_mod
from ucloud.cli.up_cmd import all_in_one_settings, gateway_url, render_settings


def test_the_settings_file_decodes_into_the_all_in_one_config(tmp_path: Path) -> None:
    path = tmp_path / "ucloud.toml"
    path.write_text(render_settings(all_in_one_settings(tmp_path)))
    config = config_mod.load(path, {})
    defaults = config_mod.Config()
    assert config.data_dir == str(tmp_path)
    assert config.etcd.max_txn_ops == 4096
    assert config.gateway.bootstrap_admin_file == str(tmp_path / "admin.otp")
    assert config.gateway.listen == defaults.gateway.listen
    assert config.nats == defaults.nats  # url: chosen at each start
    assert config.etcd.endpoints == defaults.etcd.endpoints
    assert config.host == defaults.host  # follows the hostname


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(),
)
keys = st.text(min_size=1, max_size=12)


@given(
    st.dictionaries(
        keys,
        st.one_of(
            scalars,
            st.lists(st.integers(min_value=-1000, max_value=1000)),
            st.dictionaries(keys, st.one_of(scalars, st.lists(st.text())), max_size=4),
        ),
        max_size=6,
    )
)
def test_rendered_settings_read_back_as_written(settings: dict[str, Any]) -> None:
    assert tomllib.loads(render_settings(settings)) == settings


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("[::1]:8080", "http://[::1]:8080"),
        ("[::]:8080", "http://[::1]:8080"),
        ("0.0.0.0:80", "http://127.0.0.1:80"),
        ("127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("[2001:db8::1]:443", "http://[2001:db8::1]:443"),
        (":8080", "http://[::1]:8080"),
    ],
)
def test_gateway_url(listen: str, url: str) -> None:
    assert gateway_url(listen) == url
