"""Which Debian mirror to build from: the one this machine's apt is configured with.

Theory of operation: the images are assembled from Debian packages only, fetched from
the archive the machine already uses (a local mirror, a proxy, a snapshot), never from a
hard-coded host. Both formats apt reads are understood: deb822 ``*.sources`` stanzas and
one-line ``sources.list`` entries. From them come the archive URI (the entry whose suites
are not ``*-security``) and, when configured, the security archive URI; the image's own
suites (``bookworm``, ``-updates``, ``-security``) are then put on those URIs, so a
machine on another release still builds Debian 12 images. Pure: text in, lines out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class SourcesError(ValueError):
    """No usable ``deb`` entry in the apt sources."""


@dataclass(frozen=True)
class Source:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_deb822(text: str) -> list[Source]:
    """The ``Types: deb`` stanzas of a ``*.sources`` file (``Enabled: no`` ones skipped)."""
    sources: list[Source] = []
    for stanza in _stanzas(text):
        types = stanza.get("types", "").split()
        if "deb" not in types or stanza.get("enabled", "yes").lower() == "no":
            continue
        for uri in stanza.get("uris", "").split():
            sources.append(
                Source(
                    uri.rstrip("/"),
                    tuple(stanza.get("suites", "").split()),
                    tuple(stanza.get("components", "").split()),
                )
            )
    return sources


def parse_one_line(text: str) -> list[Source]:
    """The ``deb`` lines of a ``sources.list`` file (options in ``[...]`` ignored)."""
    sources: list[Source] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        rest = line[4:].strip()
        if rest.startswith("["):
            rest = rest.partition("]")[2].strip()
        words = rest.split()
        if len(words) >= 2:
            sources.append(Source(words[0].rstrip("/"), (words[1],), tuple(words[2:])))
    return sources


def mirror_lines(sources: Iterable[Source], suite: str) -> list[str]:
    """mmdebstrap's mirror arguments for ``suite`` (+ -updates, + -security if known)."""
    archive = security = None
    for source in sources:
        if any(s.endswith("-security") or s.endswith("/updates") for s in source.suites):
            security = security or source.uri
        elif source.suites:
            archive = archive or source.uri
    if archive is None:
        raise SourcesError("no Debian archive (a 'deb' entry) in the apt sources")
    lines = [f"deb {archive} {suite} main", f"deb {archive} {suite}-updates main"]
    if security is not None:
        lines.append(f"deb {security} {suite}-security main")
    return lines


def _stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if current:
                stanzas.append(current)
            current, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            current[key] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            key = name.strip().lower()
            current[key] = value.strip()
    return stanzas
