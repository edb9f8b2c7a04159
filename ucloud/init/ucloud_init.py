#!/usr/bin/python3
"""ucloud-init: configure this VM from the ucloud metadata service. Runs inside the guest.

Standard library only, and only the part Debian ships in ``python3-minimal`` (no json,
no http, no urllib.request): it speaks HTTP/1.1 over a socket itself and reads the
plain-text endpoints of the metadata service.

What it does, once per boot (systemd oneshot unit ``ucloud-init.service``):

1. Finds the metadata service at ``[fe80::a9fe:a9fe%<zone>]:80``, the zone being the first
   interface (by index) that is up and not a loopback, retrying with backoff while the
   link comes up (and while the service does not know the VM yet), up to ``--timeout``.
2. ``GET /ssh-keys``: installs the keys into the default user's ``~/.ssh/authorized_keys``.
   The metadata service is the source of truth for a managed block in that file, between
   the ``BEGIN``/``END`` marker lines below: the block holds exactly the keys the service
   lists (a key removed there is removed here), in its order; lines outside the block are
   the user's and are kept as they are. Written atomically (temporary file, fsync,
   rename), ``~/.ssh`` 0700 and the file 0600, owned by the user; an unchanged file is
   not rewritten.
3. ``GET /ucloud/v1/hostname``: sets the hostname (``/etc/hostname``, the kernel's, and a
   ``127.0.1.1`` line in ``/etc/hosts``).
4. Makes sure the DNS servers of router advertisements (RDNSS) are used: nothing to do
   with rdnssd, or with systemd-networkd when the ``.network`` file that applies to the
   interface accepts RAs and their DNS servers; otherwise it writes one that does
   (``10-ucloud-init-<interface>.network``) and asks networkd to reload.

If the service cannot be reached or refuses, nothing is changed and the exit code is 1.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import fnmatch
import os
import pwd
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence

ADDRESS = "fe80::a9fe:a9fe"
PORT = 80
BEGIN = "# BEGIN ucloud-init managed keys (edits here are replaced at boot)"
END = "# END ucloud-init managed keys"
HOSTS_ADDRESS = "127.0.1.1"
NETWORK_DIRS = ("etc/systemd/network", "run/systemd/network", "usr/lib/systemd/network",
                "lib/systemd/network")
NETWORKD = ("usr/lib/systemd/systemd-networkd", "lib/systemd/systemd-networkd")
RDNSSD = ("usr/sbin/rdnssd", "sbin/rdnssd")
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
SIOCGIFFLAGS = 0x8913
MAX_ANSWER = 1 << 20


class Refused(Exception):
    """The metadata service answered, but not 200."""

    def __init__(self, path: str, status: int, body: str) -> None:
        super().__init__(f"GET {path}: {status} {body.strip()[:200]}")
        self.status = status


# --- pure parts -------------------------------------------------------------------------


def merge_authorized_keys(existing: str, keys: Sequence[str]) -> str:
    """``existing`` with its managed block holding exactly ``keys``; other lines kept.

    The block goes where it was, or at the end; an empty ``keys`` leaves no block.
    """
    lines = existing.splitlines()
    before: list[str] = []
    after: list[str] = []
    inside = found = False
    for line in lines:
        if not found and line.strip() == BEGIN:
            inside = found = True
        elif inside and line.strip() == END:
            inside = False
        elif not inside:
            (after if found else before).append(line)
    clean = [k.strip() for k in keys if k.strip() and not k.strip().startswith("#")]
    unique = list(dict.fromkeys(clean))
    block = [BEGIN, *unique, END] if unique else []
    merged = before + block + after
    return "".join(f"{line}\n" for line in merged)


def parse_keys(body: str) -> list[str]:
    return [line.strip() for line in body.splitlines() if line.strip()]


def valid_hostname(name: str) -> bool:
    return (
        0 < len(name) <= 63
        and all(c.isascii() and (c.isalnum() or c == "-") for c in name)
        and not name.startswith("-")
        and not name.endswith("-")
    )


def hosts_with(existing: str, hostname: str) -> str:
    """``/etc/hosts`` with one ``127.0.1.1 <hostname>`` line (replacing an old one)."""
    out: list[str] = []
    placed = False
    for line in existing.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] == HOSTS_ADDRESS:
            if not placed:
                out.append(f"{HOSTS_ADDRESS}\t{hostname}")
                placed = True
            continue
        out.append(line)
    if not placed:
        at = next((i + 1 for i, line in enumerate(out) if line.startswith("127.0.0.1")), 0)
        out.insert(at, f"{HOSTS_ADDRESS}\t{hostname}")
    return "".join(f"{line}\n" for line in out)


def parse_unit(text: str) -> dict[str, dict[str, str]]:
    """A systemd unit file as sections of keys (the last value of a key wins)."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1].strip(), {})
        elif current is not None and "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return sections


def _matches(unit: dict[str, dict[str, str]], interface: str) -> bool:
    match = unit.get("Match", {})
    names = match.get("Name", "").split()
    if not names:
        return not match  # a file without [Match] applies to every link
    negate = names[0].startswith("!")
    if negate:
        names[0] = names[0][1:]
    hit = any(fnmatch.fnmatchcase(interface, pattern) for pattern in names)
    return hit != negate


_FALSE = {"no", "false", "0", "off"}


def networkd_file(files: Iterable[tuple[str, str]], interface: str) -> str | None:
    """The ``.network`` file to add so networkd takes DNS from RAs; None when one does.

    ``files`` are (file name, text) of every ``.network`` file; networkd applies the first
    matching one in file name order.
    """
    for _name, text in sorted(files, key=lambda item: os.path.basename(item[0])):
        unit = parse_unit(text)
        if not _matches(unit, interface):
            continue
        network = unit.get("Network", {})
        accept = network.get("IPv6AcceptRA", "yes").lower() not in _FALSE
        use_dns = unit.get("IPv6AcceptRA", {}).get("UseDNS", "yes").lower() not in _FALSE
        if accept and use_dns:
            return None
        break
    return (
        "# Written by ucloud-init: IPv6 from router advertisements, with their DNS servers.\n"
        f"[Match]\nName={interface}\n\n"
        "[Network]\nDHCP=no\nIPv6AcceptRA=yes\nLinkLocalAddressing=ipv6\n\n"
        "[IPv6AcceptRA]\nUseDNS=yes\n"
    )


def backoff(attempt: int, first: float = 0.5, cap: float = 8.0) -> float:
    return float(min(cap, first * (2**attempt)))


# --- the metadata service ---------------------------------------------------------------


def interface_flags(name: str) -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", name.encode()[:15], 0)
        answer = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
    return int(struct.unpack("16sh22x", answer)[1])


def first_interface() -> tuple[str, int] | None:
    """The first interface (by index) that is up and not a loopback."""
    for index, name in sorted(socket.if_nameindex()):
        try:
            flags = interface_flags(name)
        except OSError:
            continue
        if flags & IFF_UP and not flags & IFF_LOOPBACK:
            return name, index
    return None


def has_network() -> bool:
    """Whether any interface but loopback exists (up or not): a VM without NICs has none."""
    for _index, name in socket.if_nameindex():
        try:
            if not interface_flags(name) & IFF_LOOPBACK:
                return True
        except OSError:
            continue
    return False


def http_get(address: str, port: int, scope: int, path: str, timeout: float) -> str:
    """The body of ``GET path``; Refused for any status but 200, OSError for the network."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((address, port, 0, scope))
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: [{address}]\r\nUser-Agent: ucloud-init\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER:
                raise OSError(errno.EMSGSIZE, f"answer to {path} is larger than {MAX_ANSWER}")
    return parse_response(path, b"".join(chunks))


def parse_response(path: str, data: bytes) -> str:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise OSError(errno.EPROTO, f"GET {path}: incomplete answer")
    lines = head.decode("iso-8859-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise OSError(errno.EPROTO, f"GET {path}: not an HTTP answer: {lines[0][:80]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value.strip())
    if length is not None:
        if len(body) < length:
            raise OSError(errno.EPROTO, f"GET {path}: answer cut short")
        body = body[:length]
    text = body.decode("utf-8", "replace")
    if parts[1] != "200":
        raise Refused(path, int(parts[1]), text)
    return text


class Metadata:
    """Where the service is, found once, then asked for documents."""

    def __init__(self, args: argparse.Namespace, say: Callable[[str], None]) -> None:
        self.args = args
        self.say = say
        self.scope = 0

    def fetch(self, paths: Sequence[str]) -> list[str]:
        """Every path's body, retrying the whole set with backoff until ``--timeout``."""
        deadline = time.monotonic() + self.args.timeout
        attempt = 0
        while True:
            try:
                self._find_zone()
                return [
                    http_get(self.args.address, self.args.port, self.scope, path, 10.0)
                    for path in paths
                ]
            except (OSError, Refused, LookupError) as exc:
                if isinstance(exc, Refused) and exc.status == 404:
                    raise
                delay = backoff(attempt)
                if time.monotonic() + delay > deadline:
                    raise
                if attempt == 0 or attempt % 5 == 0:
                    self.say(f"metadata service not reachable yet ({exc}); retrying")
                time.sleep(delay)
                attempt += 1

    def _find_zone(self) -> None:
        if not self.args.address.lower().startswith("fe80:"):
            return  # a global address needs no zone
        if self.args.interface:
            self.scope = socket.if_nametoindex(self.args.interface)
            return
        found = first_interface()
        if found is None:
            raise LookupError("no interface is up yet")
        self.scope = found[1]
        self.args.interface = found[0]


# --- applying it ------------------------------------------------------------------------


def write_atomic(path: str, text: str, mode: int, uid: int = -1, gid: int = -1) -> bool:
    """Replace ``path`` with ``text`` (same directory, fsync, rename); False if unchanged."""
    data = text.encode()
    try:
        with open(path, "rb") as handle:
            if handle.read() == data:
                st = os.lstat(path)
                if st.st_mode & 0o7777 == mode and (uid < 0 or st.st_uid == uid):
                    return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path) or "."
    temporary = os.path.join(directory, f".{os.path.basename(path)}.ucloud-init.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, mode)
        if uid >= 0:
            os.fchown(fd, uid, gid)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(temporary, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        os.unlink(temporary)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


def install_keys(root: str, user: str, keys: Sequence[str]) -> tuple[str, bool]:
    """Write the managed block of ``user``'s authorized_keys; (path, whether it changed)."""
    entry = pwd.getpwnam(user)
    home = os.path.join(root, entry.pw_dir.lstrip("/"))
    ssh = os.path.join(home, ".ssh")
    try:
        st = os.lstat(ssh)
    except FileNotFoundError:
        os.makedirs(home, exist_ok=True)
        os.mkdir(ssh, 0o700)
        st = os.lstat(ssh)
    if not os.path.isdir(ssh) or os.path.islink(ssh):
        raise OSError(errno.ENOTDIR, f"{ssh} is not a directory")
    if st.st_mode & 0o7777 != 0o700:
        os.chmod(ssh, 0o700)
    if (st.st_uid, st.st_gid) != (entry.pw_uid, entry.pw_gid):
        os.chown(ssh, entry.pw_uid, entry.pw_gid)
    path = os.path.join(ssh, "authorized_keys")
    if os.path.islink(path):
        os.unlink(path)  # the file is replaced, never written through a link
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            existing = handle.read()
    except FileNotFoundError:
        existing = ""
    text = merge_authorized_keys(existing, keys)
    return path, write_atomic(path, text, 0o600, entry.pw_uid, entry.pw_gid)


def set_hostname(root: str, hostname: str, kernel: bool) -> bool:
    etc = os.path.join(root, "etc")
    os.makedirs(etc, exist_ok=True)
    changed = write_atomic(os.path.join(etc, "hostname"), f"{hostname}\n", 0o644)
    hosts = os.path.join(etc, "hosts")
    try:
        with open(hosts, encoding="utf-8") as handle:
            existing = handle.read()
    except FileNotFoundError:
        existing = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    changed = write_atomic(hosts, hosts_with(existing, hostname), 0o644) or changed
    if kernel and socket.gethostname() != hostname:
        socket.sethostname(hostname)
        changed = True
    return changed


def ensure_ra_dns(root: str, interface: str, say: Callable[[str], None]) -> None:
    if any(os.path.exists(os.path.join(root, p)) for p in RDNSSD):
        return  # rdnssd writes the RA's DNS servers to resolv.conf
    if not any(os.path.exists(os.path.join(root, p)) for p in NETWORKD):
        say("neither systemd-networkd nor rdnssd is installed: DNS servers from router "
            "advertisements are not used")
        return
    files: list[tuple[str, str]] = []
    for directory in NETWORK_DIRS:
        full = os.path.join(root, directory)
        if not os.path.isdir(full):
            continue
        for name in sorted(os.listdir(full)):
            if name.endswith(".network") and name not in {n for n, _ in files}:
                with open(os.path.join(full, name), encoding="utf-8", errors="replace") as f:
                    files.append((name, f.read()))
    text = networkd_file(files, interface)
    if text is None:
        return
    target = os.path.join(root, NETWORK_DIRS[0], f"10-ucloud-init-{interface}.network")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if write_atomic(target, text, 0o644) and root == "/":
        say(f"wrote {target}: DNS servers from router advertisements on {interface}")
        for command in (["networkctl", "reload"], ["networkctl", "reconfigure", interface]):
            _run(command, say)


def _run(command: list[str], say: Callable[[str], None]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        say(f"{' '.join(command)} failed: {exc}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ucloud-init", description=__doc__.split("\n")[0])
    parser.add_argument("--address", default=ADDRESS, help=f"the service (default {ADDRESS})")
    parser.add_argument("--port", type=int, default=PORT, help=f"its port (default {PORT})")
    parser.add_argument("--interface", default="", help="the zone (default: first one up)")
    parser.add_argument("--user", default="root", help="whose authorized_keys (default root)")
    parser.add_argument("--root", default="/", help="the file system to configure")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="give up after this many seconds (default 120)")
    parser.add_argument("--no-hostname", action="store_true", help="leave the hostname alone")
    parser.add_argument("--no-dns", action="store_true", help="leave the DNS setup alone")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"ucloud-init: {message}", file=sys.stderr, flush=True)

    if not args.interface and not has_network():
        say("no network interface: a VM without NICs has no metadata service to ask")
        return 0
    metadata = Metadata(args, say)
    try:
        keys_text, hostname = metadata.fetch(["/ssh-keys", "/ucloud/v1/hostname"])
    except (OSError, Refused, LookupError) as exc:
        say(f"no metadata: {exc}")
        return 1
    say(f"metadata service at [{args.address}%{args.interface or '-'}]:{args.port}")
    keys = parse_keys(keys_text)
    try:
        path, changed = install_keys(args.root, args.user, keys)
        say(f"{len(keys)} SSH key(s) in {path}{'' if changed else ' (unchanged)'}")
        hostname = hostname.strip()
        if args.no_hostname:
            pass
        elif valid_hostname(hostname):
            if set_hostname(args.root, hostname, kernel=True):
                say(f"hostname {hostname}")
        else:
            say(f"ignoring the hostname {hostname[:70]!r}: not a valid host name")
        if not args.no_dns and args.interface:
            ensure_ra_dns(args.root, args.interface, say)
    except (OSError, KeyError) as exc:
        say(f"failed: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
