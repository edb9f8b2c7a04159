"""``POST /v1/auth/token`` (an OTP for a bearer token) and ``GET /v1/me``."""

from __future__ import annotations

from datetime import UTC, datetime

from ucloud.gateway.http import Answer, Call, Endpoint
from ucloud.gateway.schemas import Me, TokenAnswer, TokenRequest
from ucloud.gateway.state import Gateway


def endpoints(gw: Gateway) -> list[Endpoint]:
    async def token(call: Call) -> Answer:
        body: TokenRequest = call.body
        client = call.request.client
        address = client.host if client is not None else ""
        value, expires = await gw.auth.login(body.name, body.realm, body.otp, address)
        at = datetime.fromtimestamp(expires, UTC)
        return Answer(200, TokenAnswer(token=value, expires_at=at))

    async def me(call: Call) -> Answer:
        return Answer(200, Me(name=call.principal.name, realm=call.principal.realm))

    return [
        Endpoint(
            "POST", "/v1/auth/token", token, "Exchange a one-time password for a bearer token",
            body=TokenRequest, answer=TokenAnswer, access="public", errors=(400, 401, 429),
        ),
        Endpoint("GET", "/v1/me", me, "Who the token belongs to", answer=Me, errors=(401,)),
    ]
