"""The rules of logging in with a one-time password; pure (``now`` is passed in).

- An OTP matches a time-step of the user's TOTP secret: the current 30-second step or one
  step either side (clock drift).
- An OTP is accepted once: its step must be later than the last step accepted for the
  user. The caller keeps that step in etcd and advances it with a guarded transaction, so
  two gateways can never both accept the same value.
- Failures are counted per user and per source address in a sliding window; past the
  limit, every attempt under that key is refused (429) until the oldest failure leaves the
  window, without the OTP even being checked.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque

import pyotp

STEP_S = 30
DRIFT_STEPS = 1
ISSUER = "ucloud"


def new_secret() -> str:
    """A fresh base32 TOTP secret (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, name: str, realm: str) -> str:
    return str(pyotp.TOTP(secret).provisioning_uri(name=f"{name}@{realm}", issuer_name=ISSUER))


def otp_at(secret: str, now: float) -> str:
    """The OTP of ``secret`` at ``now`` (what an authenticator app shows)."""
    return str(pyotp.TOTP(secret).at(int(now)))


def matching_step(secret: str, otp: str, now: float) -> int | None:
    """The time-step ``otp`` belongs to (within the drift window), or None."""
    if not otp.isdigit() or len(otp) != 6:
        return None
    totp = pyotp.TOTP(secret)
    current = int(now) // STEP_S
    found = None
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if hmac.compare_digest(str(totp.at(step * STEP_S)), otp):
            found = step
    return found


def accepts(last_step: int, step: int) -> bool:
    """An OTP is accepted only for a step later than the last one accepted (no replay)."""
    return step > last_step


class FailureLimiter:
    """Failed attempts per key (``user:<name>``, ``addr:<ip>``) in a sliding window."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, keys: list[str], now: float) -> float:
        """Seconds until an attempt under ``keys`` is allowed again (0: allowed now)."""
        wait = 0.0
        for key in keys:
            times = self._recent(key, now)
            if times is not None and len(times) >= self.limit:
                wait = max(wait, times[len(times) - self.limit] + self.window_s - now)
        return wait

    def fail(self, keys: list[str], now: float) -> None:
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                if len(self._failures) >= self.max_keys:
                    self._evict(now)
                times = self._failures[key] = deque()
            times.append(now)
            while len(times) > self.limit:
                times.popleft()

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def _evict(self, now: float) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        while len(self._failures) >= self.max_keys:
            del self._failures[next(iter(self._failures))]


def token_secret() -> bytes:
    """A fresh signing key for tokens."""
    return secrets.token_bytes(32)
