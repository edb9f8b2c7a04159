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
    │   ├── NoServers          no running all-in-one and no config naming the servers
    │   ├── ApiError           the gateway answered 4xx/5xx (status, field, reason)
    │   └── WaitFailed         a VM failed or vanished while waited for (--wait)
    │       └── WaitTimedOut   ... or did not arrive in time
    └── InputError             a request or command argument is wrong (names the field)
        ├── NotFound           no such resource (or not yours)
        ├── Refused            the request is valid but refused in the current state
        ├── Unauthorized       no valid credentials (bad OTP, bad or expired token)
        ├── Forbidden          valid credentials, but the realm may not do this
        └── RateLimited        too many failed attempts; retry after some seconds

Errors carry what is needed to act on them; root causes are chained with ``raise ... from``.

``exit_code`` maps the tree onto the CLI's exit codes (``ExitCode``), one per cause a
script may want to tell apart; the gateway's answers map by their HTTP status.
"""

from __future__ import annotations

import enum


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
    def __init__(
        self, url: str, detail: str, *, what: str = "the gateway",
        options: str = "--url, UCLOUD_URL, --data-dir",
    ) -> None:
        super().__init__(
            f"cannot reach {what} at {url}: {detail}: is `ucloud up` (or {what}) running? "
            f"({options})"
        )
        self.url = url
        self.detail = detail


class NoServers(ClientError):
    """A command needing the servers found neither a running all-in-one nor a config."""

    def __init__(self, looked: str) -> None:
        super().__init__(
            f"no running `ucloud up` found ({looked}) and no config file: pass --data-dir DIR "
            "or --config FILE (or set UCLOUD_CONFIG)"
        )
        self.looked = looked


class ApiError(ClientError):
    """The gateway's ``{"error", "field"}`` answer, with the HTTP status."""

    retry_after_s: int | None = None  # the answer's Retry-After, if it had one

    def __init__(self, status: int, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.status = status
        self.field = field
        self.reason = reason


class WaitFailed(ClientError):
    """Waiting for a resource ended without reaching the target (failed, gone)."""


class WaitTimedOut(WaitFailed):
    """The resource did not reach the target within ``--timeout``."""


class ExitCode(enum.IntEnum):
    """What ``ucloud`` exits with: one code per cause (the README's "CLI conventions")."""

    OK = 0
    FAILED = 1  # the operation failed (a VM failed while waited for, --verify differs, ...)
    USAGE = 2  # a wrong command line, argument or config (argparse's own code)
    NOT_FOUND = 3  # no such VM, image, network, user, ... (or not yours)
    CONFLICT = 4  # refused in the current state, or someone else changed it first
    AUTH = 5  # not logged in, the login refused, or not allowed
    UNREACHABLE = 6  # the gateway or the servers cannot be reached (or found)
    TIMEOUT = 7  # --wait gave up after --timeout
    SERVER = 8  # the gateway or a server failed (HTTP 5xx, the log or the store)


def exit_code(exc: BaseException) -> ExitCode:
    """The exit code of the error that ended a command."""
    if isinstance(exc, ApiError | InputError):
        return status_exit_code(exc.status)
    for kind, code in _EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return ExitCode.FAILED


def status_exit_code(status: int) -> ExitCode:
    """The exit code of a gateway answer's HTTP status (4xx/5xx)."""
    if status >= 500:
        return ExitCode.TIMEOUT if status == 504 else ExitCode.SERVER
    return _STATUS_CODES.get(status, ExitCode.USAGE)


_STATUS_CODES = {
    401: ExitCode.AUTH, 403: ExitCode.AUTH, 429: ExitCode.AUTH,
    404: ExitCode.NOT_FOUND, 410: ExitCode.NOT_FOUND,
    409: ExitCode.CONFLICT, 412: ExitCode.CONFLICT, 423: ExitCode.CONFLICT,
    408: ExitCode.TIMEOUT,
}
_EXIT_CODES: tuple[tuple[tuple[type[UcloudError], ...], ExitCode], ...] = (
    ((ConfigError,), ExitCode.USAGE),
    ((ConflictError,), ExitCode.CONFLICT),
    ((NotLoggedIn,), ExitCode.AUTH),
    ((Unreachable, NoServers), ExitCode.UNREACHABLE),
    ((WaitTimedOut,), ExitCode.TIMEOUT),
    ((LogError, StoreError, ServerError), ExitCode.SERVER),
)
