"""The one error tree of ucloud.

    UcloudError
    ├── ConfigError            a config file or UCLOUD_* variable is wrong (names the key)
    ├── LogError               the event log (NATS JetStream) failed
    │   └── ConflictError      optimistic concurrency: the aggregate moved on (NATS 10071)
    ├── StoreError             the projection store (etcd) failed
    │   ├── CheckpointMoved    another projector advanced the checkpoint first
    │   └── ProjectionBehind   the projection did not reach an appended event in time
    ├── DecodeError            bytes that are not a known event (bad JSON, unknown tag, types)
    ├── ServerError            an embedded server did not start or stop
    ├── ImageBuildError        a built-in guest image build step failed (step, command, output)
    ├── NetworkError           the host's VM networking failed (a link, a sysctl, nftables, radvd)
    ├── VmError                a VM's QEMU or its monitor (QMP) failed (vm, step, reason)
    ├── ClientError            the CLI got no usable answer from the gateway
    │   ├── NotLoggedIn        no token (or the gateway rejected it): run `ucloud login`
    │   ├── Unreachable        the gateway's URL refused the connection or timed out
    │   ├── ApiError           the gateway answered 4xx/5xx (status, field, reason)
    │   └── WaitFailed         a VM failed, vanished or did not arrive in time (--wait)
    └── InputError             a request or command argument is wrong (names the field)
        ├── NotFound           no such resource (or not yours)
        ├── Refused            the request is valid but refused in the current state
        ├── Unauthorized       no valid credentials (bad OTP, bad or expired token)
        ├── Forbidden          valid credentials, but the realm may not do this
        └── RateLimited        too many failed attempts; retry after some seconds

Errors carry what is needed to act on them; root causes are chained with ``raise ... from``.
"""

from __future__ import annotations


class UcloudError(Exception):
    """Base of every error ucloud raises on purpose."""


class ConfigError(UcloudError):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config: {key}: {reason}")
        self.key = key
        self.reason = reason


class LogError(UcloudError):
    """The event log failed (connection, stream, publish)."""


class ConflictError(LogError):
    """The aggregate's last sequence was not the one expected."""

    def __init__(self, subject: str, expected: int, detail: str = "") -> None:
        super().__init__(f"conflict on {subject}: expected last sequence {expected}; {detail}")
        self.subject = subject
        self.expected = expected


class StoreError(UcloudError):
    """The projection store (etcd) failed."""


class CheckpointMoved(StoreError):
    def __init__(self, projection: str, expected: int) -> None:
        super().__init__(f"checkpoint of {projection} is no longer {expected}")
        self.projection = projection
        self.expected = expected


class ProjectionBehind(StoreError):
    """An event was appended, but the projection did not show it within the timeout."""

    def __init__(self, seq: int, timeout_s: float) -> None:
        super().__init__(
            f"accepted (stream sequence {seq}), but the projection did not catch up within "
            f"{timeout_s:g}s; look again shortly"
        )
        self.seq = seq
        self.timeout_s = timeout_s


class DecodeError(UcloudError):
    """Bytes on the stream that do not decode into a known event."""


class ServerError(UcloudError):
    """An embedded server (nats-server, etcd) did not start, or died."""


class NetworkError(UcloudError):
    """A host's VM networking could not be set up or torn down; says which part and why."""


class ImageBuildError(UcloudError):
    """A step of building a built-in guest image failed; names the step and the cause."""

    def __init__(self, image: str, step: str, reason: str) -> None:
        super().__init__(f"image {image}: {step}: {reason}")
        self.image = image
        self.step = step
        self.reason = reason


class InputError(UcloudError):
    """Bad input from a user: names the field and the reason."""

    status = 400

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class NotFound(InputError):
    status = 404


class Refused(InputError):
    status = 409


class Unauthorized(InputError):
    status = 401


class Forbidden(InputError):
    status = 403


class RateLimited(InputError):
    status = 429

    def __init__(self, field: str, reason: str, retry_after_s: int) -> None:
        super().__init__(field, reason)
        self.retry_after_s = retry_after_s


class VmError(UcloudError):
    """A step of running a VM under QEMU failed: launching, talking QMP, stopping."""

    def __init__(self, vm: str, step: str, reason: str) -> None:
        super().__init__(f"vm {vm}: {step}: {reason}")
        self.vm = vm
        self.step = step
        self.reason = reason


class ClientError(UcloudError):
    """The command-line client got no usable answer from the gateway."""


class NotLoggedIn(ClientError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"not logged in: {detail}; run `ucloud login --name N --realm R`")
        self.detail = detail


class Unreachable(ClientError):
    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"cannot reach the gateway at {url}: {detail}")
        self.url = url
        self.detail = detail


class ApiError(ClientError):
    """The gateway's ``{"error", "field"}`` answer, with the HTTP status."""

    retry_after_s: int | None = None  # the answer's Retry-After, if it had one

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.status = status
        self.field = field
        self.reason = reason


class WaitFailed(ClientError):
    """Waiting for a VM ended without reaching the target (failed, gone, timed out)."""
