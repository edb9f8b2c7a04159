"""Probes for what a test needs from the machine; each returns None when present."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from typing import NoReturn


def missing_capability(name: str) -> str | None:
    return _PROBES[name]()


def _root() -> str | None:
    return None if os.geteuid() == 0 else "not running as root"


def _netns() -> str | None:
    if _root():
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is not installed"
    probe = subprocess.run(
        ["unshare", "--net", "true"], capture_output=True, text=True, check=False
    )
    return None if probe.returncode == 0 else f"cannot create a network namespace: {probe.stderr}"


def _qemu() -> str | None:
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def _ceph() -> str | None:
    for tool in ("ceph-mon", "ceph-osd", "ceph-mgr"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    for module in ("rados", "rbd"):
        if importlib.util.find_spec(module) is None:
            return f"python3-{module} is not importable here (scripts/setup makes .venv see it)"
    return None


CHROMIUM = "/usr/bin/chromium"


def _browser() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is not installed (Debian's chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (scripts/setup --test)"
    return None


_PROBES = {
    "root": _root, "netns": _netns, "qemu": _qemu, "ceph": _ceph, "browser": _browser,
}


def missing(reason: str) -> NoReturn:
    """A capability this test needs is missing: fail under UCLOUD_REQUIRE_CAPABILITIES=1
    (CI), skip with the reason otherwise."""
    import pytest

    if os.environ.get("UCLOUD_REQUIRE_CAPABILITIES") == "1":
        pytest.fail(f"required but missing: {reason}", pytrace=False)
    pytest.skip(reason)
