"""Logins and bearer tokens: TOTP secrets in etcd, one use per OTP, signed tokens.

Secrets live under ``etcd.secrets_prefix``, outside the event log and outside the
projection prefix (a rebuild wipes that):

    user/<name>      {"secret": base32, "realm": realm}
    otp_step/<name>  last accepted TOTP time-step (decimal), advanced by guarded transactions
    token_key        the token signing key, when no ``gateway.token_key_file`` is configured

No secret, OTP or token is ever logged or put into an event.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from ucloud.config import Config
from ucloud.errors import ConfigError, RateLimited, Unauthorized
from ucloud.gateway import login, tokens
from ucloud.projections.mirror import Mirror
from ucloud.projections.ops import Delete, Put
from ucloud.projections.views import UserView, identity
from ucloud.store import Guard, Store

ADMIN_REALM = "admin"
_STEP_RETRIES = 3
_CACHE_MAX = 10_000


class UserSecret(msgspec.Struct, frozen=True, kw_only=True):
    secret: str
    realm: str


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    realm: str

    @property
    def admin(self) -> bool:
        return self.realm == ADMIN_REALM

    def sees(self, owner: str) -> bool:
        """Whether this user may see and act on what ``owner`` owns."""
        return self.admin or owner == self.name


class Credentials:
    """The secrets of users, in etcd under the secrets prefix."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix

    def _user_key(self, name: str) -> str:
        return f"{self.prefix}user/{name}"

    def _step_key(self, name: str) -> str:
        return f"{self.prefix}otp_step/{name}"

    async def get(self, name: str) -> UserSecret | None:
        raw = await self.store.get(self._user_key(name))
        return None if raw is None else msgspec.json.decode(raw, type=UserSecret)

    async def create(self, name: str, realm: str, secret: str) -> bool:
        """Store a new user's secret; False when the user already has one."""
        value = msgspec.json.encode(UserSecret(secret=secret, realm=realm))
        key = self._user_key(name)
        return await self.store.commit([Put(key, value)], [Guard(key, None)])

    async def remove(self, name: str) -> None:
        await self.store.commit([Delete(self._user_key(name)), Delete(self._step_key(name))])

    async def replace(self, name: str, old: UserSecret, secret: str) -> bool:
        """Swap the user's secret for ``secret``; False when it is no longer ``old``."""
        key = self._user_key(name)
        current = await self.store.get(key)
        if current is None or msgspec.json.decode(current, type=UserSecret) != old:
            return False
        value = msgspec.json.encode(UserSecret(secret=secret, realm=old.realm))
        return await self.store.commit([Put(key, value)], [Guard(key, current)])

    async def advance(self, name: str, step: int) -> bool:
        """Record ``step`` as the last accepted one; False when it is not later (replay)."""
        key = self._step_key(name)
        for _ in range(_STEP_RETRIES):
            raw = await self.store.get(key)
            if not login.accepts(int(raw) if raw else -1, step):
                return False
            if await self.store.commit([Put(key, str(step).encode())], [Guard(key, raw)]):
                return True
        return False

    async def signing_key(self, config: Config) -> bytes:
        """The token key: from ``gateway.token_key_file``, else shared by gateways in etcd."""
        if config.gateway.token_key_file:
            path = Path(config.gateway.token_key_file)
            try:
                key = path.read_bytes().strip()
            except OSError as exc:
                raise ConfigError("gateway.token_key_file", f"cannot read {path}: {exc}") from exc
            if len(key) < 16:
                raise ConfigError("gateway.token_key_file", "the key must be at least 16 bytes")
            return key
        name = f"{self.prefix}token_key"
        fresh = login.token_secret()
        if await self.store.commit([Put(name, fresh)], [Guard(name, None)]):
            return fresh
        existing = await self.store.get(name)
        if not existing:
            raise ConfigError("etcd.secrets_prefix", f"token key at {name} vanished")
        return existing


class Auth:
    """Issues tokens for OTP logins and turns bearer headers into principals."""

    def __init__(
        self,
        credentials: Credentials,
        mirror: Mirror,
        key: bytes,
        config: Config,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = credentials
        self.mirror = mirror
        self.key = key
        self.lifetime_s = config.gateway.token_lifetime_s
        self.limiter = login.FailureLimiter(
            config.gateway.login_failures, config.gateway.login_window_s
        )
        self.clock = clock
        self._verified: dict[str, tokens.Claims] = {}

    async def login(self, name: str, realm: str, otp: str, address: str) -> tuple[str, int]:
        """A token and its expiry (unix seconds); Unauthorized or RateLimited otherwise."""
        now = self.clock()
        keys = [f"user:{name}", f"addr:{address}"]
        wait = self.limiter.retry_after(keys, now)
        if wait > 0:
            raise RateLimited("otp", "too many failed attempts; try again later", math.ceil(wait))
        record = await self.check_otp(name, realm, otp, now, keys)
        user = self.mirror.users.get(name)
        if user is not None and user.view.disabled:
            raise Unauthorized("name", f"user {name} is disabled")
        claims = tokens.Claims(
            sub=name, realm=record.realm, iat=int(now), exp=int(now) + self.lifetime_s,
            uid=identity(user.view) if user is not None else "",
        )
        return tokens.sign(self.key, claims), claims.exp

    async def check_otp(
        self, name: str, realm: str, otp: str, now: float, keys: list[str] | None = None
    ) -> UserSecret:
        """The user's record once ``otp`` is accepted for it (once); Unauthorized otherwise."""
        keys = keys or [f"user:{name}"]
        record = await self.credentials.get(name)
        step = None if record is None else login.matching_step(record.secret, otp, now)
        if record is None or record.realm != realm or step is None:
            self.limiter.fail(keys, now)
            raise Unauthorized("otp", "wrong name, realm or one-time password")
        if not await self.credentials.advance(name, step):
            self.limiter.fail(keys, now)
            raise Unauthorized("otp", "this one-time password was already used; wait for the next")
        self.limiter.forget(keys[0])
        return record

    def authenticate(self, header: str | None) -> Principal:
        """The principal of an ``Authorization: Bearer`` header; Unauthorized otherwise."""
        if not header:
            raise Unauthorized("authorization", "missing bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("authorization", "expected 'Bearer <token>'")
        now = self.clock()
        claims = self._verified.get(token)
        if claims is None:
            claims = tokens.verify(self.key, token, now)
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[token] = claims
        elif claims.exp <= now:
            del self._verified[token]
            raise Unauthorized("token", "token expired")
        user = self.mirror.users.get(claims.sub)
        if user is None or user.view.realm != claims.realm or not _same_user(claims, user.view):
            raise Unauthorized("token", "unknown user")
        if user.view.disabled:
            raise Unauthorized("token", f"user {claims.sub} is disabled")
        return Principal(name=claims.sub, realm=claims.realm)


def _same_user(claims: tokens.Claims, view: UserView) -> bool:
    """Whether the token was issued to this user, not to a deleted one of the same name."""
    if claims.uid:
        return claims.uid == identity(view)
    # a token without the identity: issued after the user was created, or not to it
    return view.created_at is None or claims.iat >= int(view.created_at.timestamp())
