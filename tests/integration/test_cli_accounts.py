"""``ucloud user show|disable|enable|delete|rotate-totp`` and ``ucloud quota`` through the
real CLI against the real gateway (the services of ``test_cli``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.test_cli import Cloud, cloud  # noqa: F401  (the fixture)
from ucloud.gateway import login

pytestmark = [pytest.mark.servers, pytest.mark.timeout(120)]


async def test_account_and_quota_verbs(cloud: Cloud, tmp_path: Path) -> None:  # noqa: F811
    admin = await cloud.ucloud(
        "admin", "login", "--name", "admin", "--realm", "admin",
        "--secret-file", str(cloud.admin_secret_file),
    )
    assert admin.code == 0, admin.err
    added = await cloud.ucloud("admin", "user", "add", "carol")
    secret = added.out.split("TOTP secret: ", 1)[1].split()[0]
    logged = await cloud.ucloud("carol", "login", "--name", "carol", "--realm", "users",
                                "--otp", login.otp_at(secret, time.time() - 30))
    assert logged.code == 0, logged.err

    quota = await cloud.json("admin", "quota", "set", "carol", "--vms", "1", "--cores", "2")
    assert quota["limits"]["vms"] == 1 and quota["limits"]["cores"] == 2
    mine = await cloud.json("carol", "quota", "show")
    assert [q["user"] for q in mine] == ["carol"] and mine[0]["used"]["vms"] == 0
    table = await cloud.ucloud("carol", "quota", "show", "carol")
    assert "(not enforced yet)" in table.out and "unlimited" in table.out

    shown = await cloud.json("admin", "user", "show", "carol")
    assert shown["owns"]["vms"] == [] and not shown["user"].get("disabled")
    assert (await cloud.ucloud("admin", "user", "disable", "carol")).code == 0
    assert (await cloud.ucloud("carol", "quota", "show")).code != 0
    assert (await cloud.ucloud("admin", "user", "enable", "carol")).code == 0
    assert (await cloud.ucloud("carol", "quota", "show")).code == 0

    rotated = await cloud.ucloud("carol", "user", "rotate-totp",
                                 "--otp", login.otp_at(secret, time.time()))
    assert rotated.code == 0, rotated.err
    assert rotated.out.split("TOTP secret: ", 1)[1].split()[0] != secret

    assert (await cloud.ucloud("admin", "user", "delete", "carol")).code == 0
    names = [u["name"] for u in await cloud.json("admin", "user", "list")]
    assert names == ["admin"]
