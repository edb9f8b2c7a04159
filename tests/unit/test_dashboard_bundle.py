"""The committed dashboard bundle is the build of the committed sources.

``web/build.mjs`` writes into ``ucloud/gateway/ui/dist/build.json`` the SHA-256 of the
sources it built from; this recomputes it without node, so a change to ``web/`` that was
not rebuilt (``cd web && npm ci && npm run build``) fails here. The page names only
assets that exist, all under /ui/assets, and nothing from another origin.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ucloud.gateway.routes_ui import DIST

WEB = Path(__file__).resolve().parents[2] / "web"


def sources_hash(web: Path) -> str:
    """As ``sourcesHash`` in web/build.mjs: (path, NUL, content, NUL) in path order."""
    names = ["package.json", "package-lock.json", "build.mjs", "tsconfig.json"]
    names += [p.relative_to(web).as_posix() for p in (web / "src").rglob("*") if p.is_file()]
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode() + b"\0")
        digest.update((web / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def test_the_bundle_is_built_from_the_sources_as_committed() -> None:
    built = json.loads((DIST / "build.json").read_text())["sources"]
    assert built == sources_hash(WEB), (
        "ucloud/gateway/ui/dist is stale: run `npm ci && npm run build` in web/ and commit it"
    )


def test_the_page_names_existing_local_assets_only() -> None:
    page = (DIST / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs, page
    for ref in refs:
        assert ref.startswith("/ui/assets/"), ref
        assert (DIST / "assets" / ref.removeprefix("/ui/assets/")).is_file(), ref
    for asset in (DIST / "assets").iterdir():
        if asset.suffix in (".js", ".css"):
            assert not re.search(rb"https?://(?!www\.w3\.org)[a-z0-9.-]+/[^\s\"']*\.(?:js|css)\b",
                                 asset.read_bytes()), f"{asset.name} loads code from elsewhere"


def test_the_lockfile_pins_the_console_libraries() -> None:
    lock = json.loads((WEB / "package-lock.json").read_text())
    packages = lock["packages"]
    for name in ("@xterm/xterm", "@novnc/novnc", "qrcode", "esbuild"):
        entry = packages[f"node_modules/{name}"]
        assert entry["version"] and entry["integrity"].startswith("sha512-"), name
