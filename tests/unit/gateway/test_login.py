"""Login rules: OTP time-steps, one use per OTP, and the failure limiter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ucloud.gateway.login import (
    STEP_S,
    FailureLimiter,
    accepts,
    matching_step,
    new_secret,
    otp_at,
    provisioning_uri,
)

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_015.0


def test_current_and_adjacent_steps_match() -> None:
    step = int(NOW) // STEP_S
    for offset in (-1, 0, 1):
        otp = otp_at(SECRET, NOW + offset * STEP_S)
        assert matching_step(SECRET, otp, NOW) == step + offset


def test_steps_outside_the_window_and_garbage_do_not_match() -> None:
    assert matching_step(SECRET, otp_at(SECRET, NOW - 2 * STEP_S), NOW) is None
    assert matching_step(SECRET, otp_at(SECRET, NOW + 2 * STEP_S), NOW) is None
    for bad in ("", "12345", "1234567", "abcdef", " 12345"):
        assert matching_step(SECRET, bad, NOW) is None


def test_an_otp_is_accepted_once() -> None:
    assert accepts(-1, 10)
    assert not accepts(10, 10)
    assert not accepts(10, 9)
    assert accepts(10, 11)


def test_new_secrets_differ_and_provision() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and len(first) == 32
    uri = provisioning_uri(first, "alice", "users")
    assert uri.startswith("otpauth://totp/") and f"secret={first}" in uri and "alice" in uri


def test_limiter_blocks_after_the_limit_until_the_window_passes() -> None:
    limiter = FailureLimiter(limit=5, window_s=60)
    keys = ["user:alice", "addr:127.0.0.1"]
    for i in range(5):
        assert limiter.retry_after(keys, 100 + i) == 0
        limiter.fail(keys, 100 + i)
    assert limiter.retry_after(keys, 105) == 55
    assert limiter.retry_after(["user:alice"], 159) == 1
    assert limiter.retry_after(["user:bob", "addr:127.0.0.1"], 130) > 0
    assert limiter.retry_after(["user:bob", "addr:127.0.0.2"], 130) == 0
    assert limiter.retry_after(keys, 160) == 0  # the first failure left the window


def test_forget_clears_a_key_only() -> None:
    limiter = FailureLimiter(limit=2, window_s=60)
    limiter.fail(["user:a", "addr:x"], 0)
    limiter.fail(["user:a", "addr:x"], 1)
    limiter.forget("user:a")
    assert limiter.retry_after(["user:a"], 2) == 0
    assert limiter.retry_after(["addr:x"], 2) > 0


def test_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(limit=3, window_s=60, max_keys=100)
    for i in range(1000):
        limiter.fail([f"addr:{i}"], float(i) / 1000)
    assert len(limiter._failures) <= 100


@given(st.lists(st.integers(min_value=0, max_value=600_000).map(lambda ms: ms / 1000), max_size=40))
def test_blocked_exactly_when_the_window_holds_the_limit(times: list[float]) -> None:
    limiter = FailureLimiter(limit=5, window_s=60)
    times.sort()
    for index, moment in enumerate(times):
        recent = [t for t in times[:index] if t > moment - 60]
        blocked = limiter.retry_after(["user:u"], moment) > 0
        assert blocked == (len(recent) >= 5)
        limiter.fail(["user:u"], moment)
