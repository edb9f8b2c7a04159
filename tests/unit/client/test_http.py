"""The client against a tiny real gateway stand-in (Starlette on uvicorn, in a thread).

The stand-in mimics a few endpoints of the REST contract, only to pin the client's own
behaviour: token storage, URL resolution, error mapping, ``--wait`` progress. The real
gateway is exercised in tests/integration/test_cli.py.
"""

from __future__ import annotations

import io
import json
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ucloud.cli import vm_cmd
from ucloud.cli.main import main
from ucloud.client.http import GatewayClient, api_error
from ucloud.errors import ApiError, NotLoggedIn, Unreachable

SECRET = pyotp.random_base32()
TOKEN = "t0ken-" + pyotp.random_base32()
# name -> the statuses a VM passes through, one per GET; the last one stays.
SCRIPTS = {
    "web": ["requested", "scheduled", "scheduled", "starting", "running"],
    "doomed": ["requested", "failed"],
    "stuck": ["requested"],
}
VM_FIELDS = {"name", "cpu", "ram", "ssd", "hdd", "image", "networks", "keys", "restart"}


def error(status: int, field: str, reason: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": reason, "field": field}, status, headers=headers)


@dataclass
class StandIn:
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    scripts: dict[str, list[str]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/auth/token", self.token, methods=["POST"]),
            Route("/v1/users", self.add_user, methods=["POST"]),
            Route("/v1/keys", self.add_key, methods=["POST"]),
            Route("/v1/vms", self.create_vm, methods=["POST"]),
            Route("/v1/vms", self.list_vms, methods=["GET"]),
            Route("/v1/vms/{id}", self.get_vm, methods=["GET"]),
            Route("/v1/vms/{id}", self.delete_vm, methods=["DELETE"]),
            Route("/v1/vms/{id}/stop", self.stop_vm, methods=["POST"]),
            Route("/v1/busy", self.busy, methods=["GET"]),
            Route("/v1/broken", self.broken, methods=["GET"]),
        ])

    async def _body(self, request: Request) -> Any:
        body = await request.json() if await request.body() else None
        self.requests.append((request.method, request.url.path, body))
        return body

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {TOKEN}"

    async def token(self, request: Request) -> Response:
        body = await self._body(request)
        if body["name"] != "alice" or not pyotp.TOTP(SECRET).verify(body["otp"], valid_window=1):
            return error(401, "otp", "wrong name, realm or one-time password")
        return JSONResponse({"token": TOKEN, "expires_at": "2030-01-01T00:00:00Z"})

    async def add_user(self, request: Request) -> Response:
        body = await self._body(request)
        if not self._authorized(request):
            return error(401, "token", "token expired")
        uri = pyotp.TOTP(SECRET).provisioning_uri(name=f"{body['name']}@{body['realm']}")
        return JSONResponse({**body, "otpauth_uri": uri}, 201)

    async def add_key(self, request: Request) -> Response:
        body = await self._body(request)
        if not self._authorized(request):
            return error(401, "token", "token expired")
        return JSONResponse({"id": "k1", **body}, 201)

    async def create_vm(self, request: Request) -> Response:
        body = await self._body(request)
        if not self._authorized(request):
            return error(401, "token", "token expired")
        unknown = set(body) - VM_FIELDS
        if unknown:
            return error(400, sorted(unknown)[0], "unknown field")
        if body["name"] == "taken":
            return error(409, "name", "you already have a VM named 'taken'")
        vm_id = f"vm-{body['name']}"
        self.scripts[vm_id] = list(SCRIPTS.get(body["name"], ["requested"]))
        self.vms[vm_id] = {
            "id": vm_id, "owner": "alice", "name": body["name"], "image": body["image"],
            "spec": {"cpu": body["cpu"], "ram_mib": 2048, "ssd_mib": 10240, "hdd_mib": 0},
            "status": self.scripts[vm_id].pop(0), "host": "", "reason": "",
            "restart": body.get("restart", "always"),
        }
        return JSONResponse(self.vms[vm_id], 202)

    async def list_vms(self, request: Request) -> Response:
        return JSONResponse(list(self.vms.values()))

    async def get_vm(self, request: Request) -> Response:
        vm = self.vms.get(request.path_params["id"])
        if vm is None:
            return error(404, "id", "no such VM")
        script = self.scripts[vm["id"]]
        if script:
            vm["status"] = script.pop(0)
            vm["host"] = "" if vm["status"] == "requested" else "h1"
            if vm["status"] == "failed":
                vm["reason"], vm["host"] = "no host has 64 CPUs free", ""
        elif vm["status"] == "deleting":
            del self.vms[vm["id"]]
        return JSONResponse(vm)

    async def delete_vm(self, request: Request) -> Response:
        vm = self.vms[request.path_params["id"]]
        vm["status"] = "deleting"
        return JSONResponse(vm, 202)

    async def stop_vm(self, request: Request) -> Response:
        vm = self.vms[request.path_params["id"]]
        vm["status"] = "stopping"
        self.scripts[vm["id"]] = ["stopping", "stopped"]
        return JSONResponse(vm, 202)

    async def busy(self, request: Request) -> Response:
        return error(429, "otp", "too many failed attempts", **{"Retry-After": "7"})

    async def broken(self, request: Request) -> Response:
        return PlainTextResponse("Internal Server Error\nat line 3", 500)


@dataclass
class Served:
    url: str
    stand_in: StandIn


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    stand_in = StandIn()
    sock = socket.socket(socket.AF_INET6)
    sock.bind(("::1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(stand_in.app(), log_level="warning", lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://[::1]:{port}", stand_in)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Cli:
    code: int
    out: str
    err: str


Run = Callable[..., Cli]


@pytest.fixture
def cli(
    served: Served,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Run:
    """Run ``ucloud ARGS`` with its own config dir, pointed at the stand-in."""
    monkeypatch.setenv("UCLOUD_CONFIG_DIR", str(tmp_path / "conf"))
    monkeypatch.setenv("UCLOUD_URL", served.url)
    monkeypatch.delenv("UCLOUD_TOKEN", raising=False)
    monkeypatch.setattr(vm_cmd, "POLL_INTERVAL_S", 0.01)

    def run(*argv: str) -> Cli:
        capsys.readouterr()
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        assert TOKEN not in out + err
        return Cli(code, out, err)

    return run


def log_in(cli: Run, tmp_path: Path) -> None:
    secret_file = tmp_path / "alice.totp"
    secret_file.write_text(SECRET + "\n")
    result = cli("login", "--name", "alice", "--realm", "users", "--secret-file", str(secret_file))
    assert result.code == 0


# --- the HTTP client -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "field", "reason"),
    [
        (400, b'{"error": "unknown field", "field": "colour"}', "colour", "unknown field"),
        (404, b'{"error": "no such VM", "field": ""}', "", "no such VM"),
        (502, b"<html>Bad Gateway</html>", "", "HTTP 502: <html>Bad Gateway</html>"),
        (500, b"", "", "HTTP 500"),
        (400, b'{"error": 3}', "", 'HTTP 400: {"error": 3}'),
    ],
)
def test_api_error_mapping(status: int, body: bytes, field: str, reason: str) -> None:
    error = api_error(status, body)
    assert (error.status, error.field, error.reason) == (status, field, reason)
    assert str(error) == (f"{field}: {reason}" if field else reason)


def test_client_maps_answers_to_errors(served: Served) -> None:
    with GatewayClient(served.url, "not-the-token") as gateway:
        with pytest.raises(NotLoggedIn, match=r"rejected the token \(token: token expired\)"):
            gateway.post("/v1/vms", {"name": "x"})
        with pytest.raises(ApiError, match=r"^HTTP 500: Internal Server Error$"):
            gateway.get("/v1/broken")
        with pytest.raises(ApiError, match=r"otp: too many failed attempts \(retry in 7s\)"):
            gateway.get("/v1/busy")
        assert "not-the-token" not in repr(gateway)
    with GatewayClient(served.url) as anonymous, pytest.raises(ApiError) as info:
        anonymous.post("/v1/auth/token", {"name": "bob", "realm": "users", "otp": "1"})
    assert (info.value.status, info.value.field) == (401, "otp")


def test_connection_refused_names_the_url() -> None:
    probe = socket.socket(socket.AF_INET6)
    probe.bind(("::1", 0))
    url = f"http://[::1]:{probe.getsockname()[1]}"
    probe.close()
    with GatewayClient(url, "t") as gateway, pytest.raises(Unreachable) as info:
        gateway.get("/v1/vms")
    assert info.value.url == url
    assert str(info.value).startswith(f"cannot reach the gateway at {url}: connection refused")


# --- the CLI ----------------------------------------------------------------------------


def test_login_keeps_a_private_token_and_later_commands_use_it(
    cli: Run, tmp_path: Path, served: Served
) -> None:
    log_in(cli, tmp_path)
    stored = tmp_path / "conf" / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text())["url"] == served.url
    assert json.loads(stored.read_text())["token"] == TOKEN
    listed = cli("vm", "list", "-o", "json")
    assert listed.code == 0
    assert json.loads(listed.out) == list(served.stand_in.vms.values())


def test_login_with_an_otpauth_uri_file(cli: Run, tmp_path: Path) -> None:
    uri_file = tmp_path / "alice.uri"
    uri_file.write_text(pyotp.TOTP(SECRET).provisioning_uri(name="alice@users"))
    result = cli("login", "--name", "alice", "--realm", "users", "--secret-file", str(uri_file))
    assert result.code == 0
    assert "logged in as alice (realm users)" in result.out


def test_a_wrong_otp_is_the_gateways_error_on_stderr(cli: Run, tmp_path: Path) -> None:
    result = cli("login", "--name", "alice", "--realm", "users", "--otp", "000000")
    assert (result.code, result.out) == (1, "")
    assert result.err == "ucloud: otp: wrong name, realm or one-time password\n"
    assert not (tmp_path / "conf" / "credentials.json").exists()


def test_without_a_login_the_cli_says_so(cli: Run) -> None:
    result = cli("vm", "list")
    assert result.code == 1
    assert result.err.startswith("ucloud: not logged in: no stored login")


def test_a_rejected_token_says_log_in_again(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCLOUD_TOKEN", "stale")
    result = cli("vm", "create", "x", "--image", "i", "--cpu", "1", "--ram", "1", "--ssd", "1")
    assert result.code == 1
    assert "not logged in: the gateway rejected the token" in result.err
    assert "ucloud login" in result.err


def test_connection_refused_through_the_cli(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UCLOUD_URL", "http://[::1]:1")
    result = cli("login", "--name", "alice", "--realm", "users", "--otp", "123456")
    assert result.code == 1
    assert "cannot reach the gateway at http://[::1]:1: connection refused" in result.err


@pytest.mark.parametrize(
    "argv",
    [
        ("vm", "create", "x", "--image", "i", "--cpu", "1", "--ram", "2X", "--ssd", "1"),
        ("vm", "create", "x", "--image", "i", "--cpu", "0", "--ram", "1", "--ssd", "1"),
        ("vm", "start", "x", "--timeout", "-1"),
        ("vm", "stop", "x", "--until", "asleep"),
        ("host", "add", "h", "--cpu", "8", "--ram", "1.0001G", "--ssd", "1"),
        ("key", "add", "laptop", "/no/such/file.pub"),
        ("login", "--name", "a", "--realm", "r", "--secret-file", "/no/such/secret"),
        ("login", "--name", "a", "--realm", "r"),
    ],
)
def test_usage_errors_exit_2_and_send_nothing(
    cli: Run, served: Served, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    monkeypatch.setenv("UCLOUD_TOKEN", TOKEN)
    before = len(served.stand_in.requests)
    result = cli(*argv)
    assert result.code == 2
    assert result.err.strip().splitlines()[-1].startswith("ucloud")
    assert len(served.stand_in.requests) == before


def test_an_api_error_names_the_field(cli: Run, tmp_path: Path) -> None:
    log_in(cli, tmp_path)
    result = cli("vm", "create", "taken", "--image", "i", "--cpu", "1", "--ram", "1", "--ssd", "1")
    assert (result.code, result.out) == (1, "")
    assert result.err == "ucloud: name: you already have a VM named 'taken'\n"


def test_create_sends_sizes_in_mib_and_keys_only_when_given(
    cli: Run, tmp_path: Path, served: Served
) -> None:
    log_in(cli, tmp_path)
    argv: tuple[str, ...] = ("vm", "create", "plain", "--image", "debian", "--cpu", "2",
                             "--ram", "1.5G", "--ssd", "20", "--net", "lan")
    assert cli(*argv).code == 0
    assert served.stand_in.requests[-1][2] == {
        "name": "plain", "image": "debian", "cpu": 2, "ram": "1536M", "ssd": "20480M",
        "networks": ["lan"],
    }
    argv = ("vm", "create", "keyed", "--image", "debian", "--cpu", "1", "--ram", "512M",
            "--ssd", "1T", "--hdd", "2T", "--key", "a", "--key", "b", "--restart", "never")
    assert cli(*argv).code == 0
    body = served.stand_in.requests[-1][2]
    assert (body["keys"], body["hdd"], body["restart"]) == (["a", "b"], "2097152M", "never")


def test_create_wait_prints_each_status_change_then_the_vm(cli: Run, tmp_path: Path) -> None:
    log_in(cli, tmp_path)
    result = cli("vm", "create", "web", "--image", "i", "--cpu", "2", "--ram", "2", "--ssd", "10",
                 "--wait")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[:4] == [
        "web: requested",
        "web: requested -> scheduled on h1",
        "web: scheduled -> starting on h1",
        "web: starting -> running on h1",
    ]
    assert "status:   running" in lines


def test_create_until_scheduled_with_json_keeps_stdout_json(cli: Run, tmp_path: Path) -> None:
    log_in(cli, tmp_path)
    result = cli("vm", "create", "web", "--image", "i", "--cpu", "2", "--ram", "2", "--ssd", "10",
                 "--until", "scheduled", "-o", "json")
    assert result.code == 0
    assert json.loads(result.out)["status"] == "scheduled"
    assert result.err.splitlines() == ["web: requested", "web: requested -> scheduled on h1"]


def test_wait_fails_with_the_vms_reason(cli: Run, tmp_path: Path) -> None:
    log_in(cli, tmp_path)
    result = cli("vm", "create", "doomed", "--image", "i", "--cpu", "64", "--ram", "2",
                 "--ssd", "10", "--wait")
    assert result.code == 1
    assert result.err == "ucloud: vm doomed is failed: no host has 64 CPUs free\n"


def test_wait_gives_up_after_the_timeout(cli: Run, tmp_path: Path) -> None:
    log_in(cli, tmp_path)
    result = cli("vm", "create", "stuck", "--image", "i", "--cpu", "1", "--ram", "2",
                 "--ssd", "10", "--wait", "--timeout", "0.2")
    assert result.code == 1
    assert "gave up waiting for vm stuck to be running after 0.2s (last status: requested)" in (
        result.err
    )


def test_stop_then_delete_wait(cli: Run, tmp_path: Path, served: Served) -> None:
    log_in(cli, tmp_path)
    assert cli("vm", "create", "web", "--image", "i", "--cpu", "2", "--ram", "2", "--ssd", "10",
               "--wait").code == 0
    stopped = cli("vm", "stop", "vm-web", "--wait")
    assert stopped.code == 0
    assert stopped.out.splitlines()[:2] == ["web: stopping on h1", "web: stopping -> stopped on h1"]
    deleted = cli("vm", "delete", "vm-web", "--wait")
    assert deleted.code == 0
    assert deleted.out.splitlines() == ["web: deleting on h1", "web: deleting -> gone"]
    assert "vm-web" not in served.stand_in.vms


def test_key_add_from_stdin(cli: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log_in(cli, tmp_path)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMu0 alice@laptop"
    monkeypatch.setattr("sys.stdin", io.StringIO(f"\n{key}\n"))
    result = cli("key", "add", "laptop", "-", "-o", "json")
    assert result.code == 0
    assert json.loads(result.out) == {"id": "k1", "name": "laptop", "public_key": key}


def test_user_add_shows_the_secret_once(cli: Run, tmp_path: Path) -> None:
    log_in(cli, tmp_path)
    result = cli("user", "add", "bob", "--realm", "staff")
    assert result.code == 0
    assert f"TOTP secret: {SECRET}" in result.out
    assert "otpauth URI: otpauth://totp/" in result.out
    assert "shown once" in result.out
