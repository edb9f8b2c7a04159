"""ucloud-init's pure parts, its files, its HTTP client, and that it needs only python3-minimal."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.capabilities import missing
from ucloud.init import ucloud_init as ui

PROGRAM = Path(ui.__file__)
K1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI1 alice@laptop"
K2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI2 alice@phone"
MINE = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ root@console"


def block(*keys: str) -> str:
    return "".join(f"{line}\n" for line in (ui.BEGIN, *keys, ui.END))


@pytest.mark.parametrize(
    ("existing", "keys", "merged"),
    [
        ("", [K1], block(K1)),
        ("", [], ""),
        (f"{MINE}\n", [K1, K2], f"{MINE}\n" + block(K1, K2)),
        # a key removed from the metadata is removed; the user's line stays
        (f"{MINE}\n" + block(K1, K2), [K2], f"{MINE}\n" + block(K2)),
        # the block stays where it was, lines after it too
        (block(K1) + f"{MINE}\n", [K2], block(K2) + f"{MINE}\n"),
        # no keys: no block, nothing else touched
        (f"# mine\n{MINE}\n" + block(K1), [], f"# mine\n{MINE}\n"),
        # no final newline, blank and duplicate keys, whitespace
        (MINE, [f"  {K1} ", "", K1], f"{MINE}\n" + block(K1)),
    ],
)
def test_merge_authorized_keys(existing: str, keys: list[str], merged: str) -> None:
    assert ui.merge_authorized_keys(existing, keys) == merged
    assert ui.merge_authorized_keys(merged, keys) == merged  # idempotent


key_lines = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85#"),
    min_size=1, max_size=30,
).map(lambda s: "ssh-ed25519 " + s.strip() if s.strip() else "ssh-ed25519 x")


@given(mine=st.lists(key_lines, max_size=4), old=st.lists(key_lines, max_size=4),
       new=st.lists(key_lines, max_size=4))
def test_merge_keeps_user_lines_and_holds_exactly_the_metadata_keys(
    mine: list[str], old: list[str], new: list[str]
) -> None:
    start = ui.merge_authorized_keys("".join(f"{k}\n" for k in mine), old)
    merged = ui.merge_authorized_keys(start, new).splitlines()
    if new:
        begin, end = merged.index(ui.BEGIN), merged.index(ui.END)
        assert merged[begin + 1 : end] == list(dict.fromkeys(k.strip() for k in new))
        assert merged[:begin] + merged[end + 1 :] == mine
    else:
        assert merged == mine


def test_hosts_with() -> None:
    base = "127.0.0.1\tlocalhost\n::1\tlocalhost\n"
    once = ui.hosts_with(base, "web")
    assert once == "127.0.0.1\tlocalhost\n127.0.1.1\tweb\n::1\tlocalhost\n"
    assert ui.hosts_with(once, "db") == once.replace("web", "db")
    assert ui.hosts_with(once, "web") == once


@pytest.mark.parametrize(
    ("name", "valid"),
    [("web-1", True), ("a" * 63, True), ("a" * 64, False), ("-x", False), ("x_y", False),
     ("", False), ("wéb", False)],
)
def test_valid_hostname(name: str, valid: bool) -> None:
    assert ui.valid_hostname(name) is valid


DEBIAN_IMAGE = (Path(__file__).parents[3] / "ucloud/imagebuild/files/debian-ucloud.network")


@pytest.mark.parametrize(
    ("files", "writes"),
    [
        ([("50-ucloud.network", DEBIAN_IMAGE.read_text())], False),
        ([("50-x.network", "[Match]\nName=eth0\n[Network]\nDHCP=yes\n")], False),  # defaults
        ([("50-x.network", "[Match]\nName=en*\n[IPv6AcceptRA]\nUseDNS=no\n")], True),
        ([("50-x.network", "[Match]\nName=eth*\n[Network]\nIPv6AcceptRA=no\n")], True),
        ([("50-x.network", "[Match]\nName=!eth0\n[Network]\n")], True),  # not for eth0
        ([("50-x.network", "[Match]\nName=wlan*\n")], True),
        ([], True),
        # the first match in name order wins
        ([("99-good.network", "[Match]\nName=eth0\n"),
          ("20-bad.network", "[Match]\nName=eth0\n[IPv6AcceptRA]\nUseDNS=false\n")], True),
        ([("99-bad.network", "[Match]\nName=eth0\n[IPv6AcceptRA]\nUseDNS=false\n"),
          ("20-good.network", "[Match]\nName=e*\n")], False),
    ],
)
def test_networkd_file(files: list[tuple[str, str]], writes: bool) -> None:
    text = ui.networkd_file(files, "eth0")
    assert (text is not None) is writes
    if text is not None:
        unit = ui.parse_unit(text)
        assert unit["Match"]["Name"] == "eth0" and unit["IPv6AcceptRA"]["UseDNS"] == "yes"
        assert ui.networkd_file([*files, ("10-ucloud-init-eth0.network", text)], "eth0") is None


def test_parse_response() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab\nEXTRA"
    assert ui.parse_response("/p", ok) == "ab\n"
    with pytest.raises(ui.Refused) as refused:
        ui.parse_response("/p", b"HTTP/1.1 403 Forbidden\r\n\r\nforbidden\n")
    assert refused.value.status == 403 and "403 forbidden" in str(refused.value)
    for bad in (b"", b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab"):
        with pytest.raises(OSError):
            ui.parse_response("/p", bad)


@pytest.mark.root
def test_install_keys_modes_owner_and_idempotence(tmp_path: Path) -> None:
    root = tmp_path / "guest"
    path, changed = ui.install_keys(str(root), "root", [K1])
    assert changed and path == str(root / "root/.ssh/authorized_keys")
    ssh = root / "root/.ssh"
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600
    assert (Path(path).stat().st_uid, ssh.stat().st_uid) == (0, 0)
    before = Path(path).stat().st_mtime_ns
    assert ui.install_keys(str(root), "root", [K1]) == (path, False)
    assert Path(path).stat().st_mtime_ns == before
    # a user's own key is kept; a file that is a link is replaced, not written through
    target = tmp_path / "elsewhere"
    target.write_text(f"{MINE}\n")
    Path(path).unlink()
    Path(path).symlink_to(target)
    ssh.chmod(0o755)
    ui.install_keys(str(root), "root", [K2])
    assert not Path(path).is_symlink() and target.read_text() == f"{MINE}\n"
    assert Path(path).read_text() == block(K2)
    assert stat.S_IMODE(ssh.stat().st_mode) == 0o700
    assert [p.name for p in ssh.iterdir()] == ["authorized_keys"]  # no temporaries left


class FlakyService:
    """A plain HTTP server on ::1 that appears after ``delay_s`` and answers two paths."""

    def __init__(self, delay_s: float, status: str = "200 OK") -> None:
        self.delay_s = delay_s
        self.status = status
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.bind(("::1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        time.sleep(self.delay_s)
        self.sock.listen()
        self.sock.settimeout(10)
        try:
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    line = conn.recv(4096).decode().split("\r\n")[0]
                    self.requests.append(line)
                    body = {"GET /ssh-keys HTTP/1.1": f"{K1}\n{K2}\n",
                            "GET /ucloud/v1/hostname HTTP/1.1": "web-1\n"}.get(line, "")
                    conn.sendall(
                        f"HTTP/1.1 {self.status}\r\nContent-Length: {len(body)}\r\n\r\n{body}"
                        .encode()
                    )
        except OSError:
            return


def test_main_retries_until_the_service_answers(tmp_path: Path) -> None:
    service = FlakyService(delay_s=1.2)
    service.thread.start()
    code = ui.main([
        "--address", "::1", "--port", str(service.port), "--root", str(tmp_path),
        "--no-hostname", "--no-dns", "--timeout", "20", "--user", _me(),
    ])
    service.sock.close()
    assert code == 0
    assert service.requests == ["GET /ssh-keys HTTP/1.1", "GET /ucloud/v1/hostname HTTP/1.1"]
    home = tmp_path / Path(os.path.expanduser("~")).relative_to("/")
    assert (home / ".ssh/authorized_keys").read_text() == block(K1, K2)


def test_main_changes_nothing_when_refused(tmp_path: Path) -> None:
    service = FlakyService(delay_s=0, status="404 Not Found")
    service.thread.start()
    code = ui.main([
        "--address", "::1", "--port", str(service.port), "--root", str(tmp_path),
        "--timeout", "3", "--user", _me(),
    ])
    service.sock.close()
    assert code == 1 and list(tmp_path.iterdir()) == []


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def minimal_stdlib(tmp_path: Path) -> Path | None:
    """A copy of the standard library of Debian's python3-minimal (None: not on Debian)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    listing = subprocess.run(
        ["dpkg", "-L", f"libpython{version}-minimal"], capture_output=True, text=True,
        check=False,
    )
    if listing.returncode != 0:
        return None
    base = f"/usr/lib/python{version}/"
    out = tmp_path / "stdlib"
    for line in listing.stdout.splitlines():
        if line.startswith(base) and os.path.isfile(line):
            target = out / line[len(base) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(Path(line).read_bytes())
    return out


def test_needs_only_python3_minimal(tmp_path: Path) -> None:
    stdlib = minimal_stdlib(tmp_path)
    if stdlib is None:
        missing("dpkg does not know libpython3-minimal: not a Debian machine")
    code = (
        f"import sys; sys.path[:] = [{str(stdlib)!r}, {str(stdlib / 'lib-dynload')!r}]; "
        "import importlib.util as u; "
        f"s = u.spec_from_file_location('ucloud_init', {str(PROGRAM)!r}); "
        "m = u.module_from_spec(s); s.loader.exec_module(m); "
        "sys.exit(m.main(['--address', '::1', '--port', '1', '--timeout', '0']))"
    )
    run = subprocess.run(
        ["/usr/bin/python3", "-I", "-S", "-c", code], capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert run.returncode == 1, run.stderr  # ran, found no service: no ImportError
    assert "ucloud-init: no metadata: " in run.stderr and "Error" not in run.stderr


@pytest.mark.netns
def test_a_vm_without_nics_does_not_wait_for_metadata(tmp_path: Path) -> None:
    """In a network namespace with only loopback, ucloud-init ends at once (the login
    prompt waits for it) instead of retrying until its timeout."""
    script = Path(__file__).resolve().parents[3] / "ucloud" / "init" / "ucloud_init.py"
    began = time.monotonic()
    done = subprocess.run(
        ["unshare", "--net", sys.executable, str(script), "--root", str(tmp_path),
         "--timeout", "60"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no network interface" in done.stderr
    assert time.monotonic() - began < 20
