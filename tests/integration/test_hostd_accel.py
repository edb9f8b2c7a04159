"""The KVM probe of ``host.accel = "auto"``: the tiny guest booted under KVM for real.

On a host where KVM works the guest prints its line and the answer is kvm; where it does
not (no /dev/kvm, or a paravirtual one under which QEMU aborts or the guest stays
silent) the answer is tcg with the reason. Either way nothing of the probe is left.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest

from tests.integration.hostd_harness import built
from ucloud.hostd.accel import probe_kvm

pytestmark = [pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("cpu_model", ["max", "qemu64"])
async def test_the_kvm_probe_answers_and_leaves_nothing_behind(cpu_model: str) -> None:
    image = await asyncio.to_thread(built, "tiny")
    workdir = Path(tempfile.mkdtemp(prefix="up", dir="/tmp"))
    began = time.monotonic()
    works, reason = await probe_kvm(
        "qemu-system-x86_64", cpu_model, image, workdir, timeout=20
    )
    took = time.monotonic() - began
    print(f"KVM probe: {'kvm' if works else 'tcg'} after {took:.1f}s: {reason}")
    assert reason and took < 50
    if not Path("/dev/kvm").exists():
        assert not works
    assert works == ("came up" in reason)
    assert list(workdir.iterdir()) == []  # the probe's disk, sockets and QEMU are gone
    workdir.rmdir()
