"""The dashboard in a real browser: Debian's headless chromium, driven by Playwright,
against a real gateway, scheduler, dispatcher, projector and hostd running a tiny QEMU
guest.

A user logs in through the form with a TOTP code, gets a bad VM name refused next to the
name field, creates a tiny VM from the form (after its price is shown), sees it become
running without reloading (the list is fed by the server's stream), opens its details
(addresses, audit trail) and deletes it; an admin sees the hosts with capacity bars, adds
a user and sees the QR code of its secret; the event log tails live; the VM list is shown
at a phone's width. Every page's screenshot goes to tests/browser/screenshots/ (or
``UCLOUD_SCREENSHOTS``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.capabilities import CHROMIUM
from tests.integration.gateway_harness import User
from tests.integration.hostd_harness import Cloud, built, import_image, running_cloud
from ucloud.config import Config
from ucloud.imagebuild.tiny import UP_LINE

pytestmark = [pytest.mark.browser, pytest.mark.qemu, pytest.mark.root, pytest.mark.slow]

SHOTS = Path(os.environ.get("UCLOUD_SCREENSHOTS") or Path(__file__).parent / "screenshots")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
WAIT_MS = 90_000


@pytest.fixture
async def cloud(config: Config, tmp_path: Path) -> AsyncIterator[Cloud]:
    async with running_cloud(config, tmp_path) as running:
        yield running


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as driver:
        chromium = await driver.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    print(f"screenshot {SHOTS / name}.png")


async def drawn(page: Any, canvas: str, timeout_s: float = 60) -> bool:
    """Whether the canvas shows more than one colour within ``timeout_s``."""
    script = """(selector) => {
        const c = document.querySelector(selector);
        if (!c || !c.width || !c.height) return 0;
        const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < data.length && seen.size < 2; i += 4 * 97) {
            seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
        }
        return seen.size;
    }"""
    for _ in range(int(timeout_s * 2)):
        if await page.evaluate(script, canvas) > 1:
            return True
        await page.wait_for_timeout(500)
    return False


async def accept(dialog: Any) -> None:
    await dialog.accept()


async def log_in(page: Any, url: str, user: User) -> None:
    await page.goto(url + "/")  # redirects to /ui/
    assert page.url.endswith("/ui/")
    await page.fill("#f-name", user.name)
    await page.fill("#f-realm", user.realm)
    await page.fill("#f-otp", user.next_otp())
    await page.click("form button[type=submit]")
    await page.wait_for_selector("#whoami")
    assert await page.text_content("#whoami") == f"{user.name}@{user.realm}"
    assert "token expires" in (await page.text_content("#expiry") or "")


async def test_a_user_creates_watches_and_deletes_a_vm(cloud: Cloud, browser: Any) -> None:
    await import_image(cloud, await asyncio.to_thread(built, "tiny"), "tiny")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(cloud.gw.url + "/ui/")
    await page.wait_for_selector("#f-otp")
    await shot(page, "01-login")
    await log_in(page, cloud.gw.url, cloud.user)
    await page.wait_for_selector("form #f-image option[value=tiny]", state="attached")
    await page.wait_for_selector("#live.on")

    # a name the API refuses: its reason appears next to the name field
    await page.fill("#f-name", "bad name!")
    await page.fill("#f-ram", "128M")
    await page.click("form button[type=submit]")  # the quote
    await page.wait_for_selector("#quote strong")
    assert "per 30 days" in (await page.text_content("#quote") or "")
    await page.click("#confirm")
    slot = page.locator('[data-error-for="name"]')
    await slot.wait_for()
    assert "letters, digits" in (await slot.text_content() or "")
    await shot(page, "02-vm-name-refused")

    await page.fill("#f-name", "web1")
    await page.click("form button[type=submit]")
    await page.wait_for_selector("#confirm:visible")
    await page.click("#confirm")
    row = page.locator('tr[data-vm="web1"]')
    await row.wait_for()
    # no reload: the stream moves the status on
    await row.locator('[data-status="running"]').wait_for(timeout=WAIT_MS)
    await shot(page, "03-vms-running")

    await row.locator("a").click()
    await page.wait_for_selector("#audit tbody tr")
    await page.wait_for_selector("#addresses")
    await page.wait_for_selector("#consoles")
    audit = await page.text_content("#audit") or ""
    assert "vm.requested" in audit and "vm.started" in audit, audit
    await shot(page, "04-vm-details")

    # the serial console: type into the guest's shell, read its answer in the terminal
    vm = (await cloud.client().get("/v1/vms/web1")).json()["id"]
    await cloud.wait_console(vm, UP_LINE, timeout=120)
    await page.click("#consoles button:has-text('Serial console')")
    await page.wait_for_selector("#consoles .console-state:text('connected')")
    await page.click("#consoles .terminal")
    await page.keyboard.type("echo hi-$((41+1))\n")
    await page.wait_for_selector("#consoles .terminal :text('hi-42')", timeout=WAIT_MS)
    await shot(page, "04b-serial-console")
    # the screen: noVNC draws the guest's VGA text on its canvas, not one flat colour
    await page.click("#consoles button:has-text('Screen (VNC)')")
    await page.wait_for_selector("#consoles .console-state:text('connected')")
    assert await drawn(page, "#consoles .screen canvas"), "the VNC canvas is one colour"
    await shot(page, "04c-vnc-console")
    # what `ucloud vm vnc` prints: the screen by a ticket of the URL, no login needed
    granted = (await cloud.client().post(f"/v1/vms/{vm}/console-tickets",
                                         json={"kind": "vnc"})).json()  # fmt: skip
    viewer = await (await browser.new_context()).new_page()
    await viewer.goto(f"{cloud.gw.url}/ui/vnc?vm={vm}&ticket={granted['ticket']}")
    await viewer.wait_for_selector(".console-state:text('connected')")
    assert await drawn(viewer, ".screen canvas")
    await viewer.reload()  # a used ticket opens nothing
    await viewer.wait_for_selector(".console-state:not(:text('connecting'))")
    assert "connected" != (await viewer.text_content(".console-state") or "").strip()
    await viewer.context.close()

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(cloud.gw.url + "/ui/#/vms")
    await page.locator('tr[data-vm="web1"]').wait_for()
    await shot(page, "05-vms-narrow")
    await page.set_viewport_size({"width": 1280, "height": 900})

    for name in ("networks", "files", "images", "keys", "orders"):
        await page.goto(cloud.gw.url + f"/ui/#/{name}")
        await page.wait_for_selector(f"#{name}")
        await page.wait_for_timeout(500)
        await shot(page, f"06-{name}")
    await page.wait_for_selector("#invoice-total")

    await page.goto(cloud.gw.url + "/ui/#/vms")
    row = page.locator('tr[data-vm="web1"]')
    page.once("dialog", accept)
    await row.locator('button[data-act="delete"]').click()
    await row.wait_for(state="detached", timeout=WAIT_MS)
    assert (await cloud.client().get("/v1/vms/web1")).status_code == 404
    await page.click("#logout")
    await page.wait_for_selector("#f-otp")
    assert errors == []
    await context.close()


async def test_an_admin_sees_hosts_adds_a_user_and_tails_the_log(
    cloud: Cloud, browser: Any
) -> None:
    admin = await cloud.gw.new_user(realm="admin")
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await log_in(page, cloud.gw.url, admin)

    await page.goto(cloud.gw.url + "/ui/#/hosts")
    host = page.locator("#hosts tbody tr", has_text=cloud.host)
    await host.wait_for()
    assert await host.locator(".capacity .meter").count() >= 3
    await host.locator('button[data-act="drain"]').click()
    await page.locator("#hosts tbody tr", has_text=cloud.host).locator(
        'button[data-act="undrain"]').wait_for()
    await shot(page, "07-hosts")
    await page.locator('button[data-act="undrain"]').click()
    await page.locator('button[data-act="drain"]').wait_for()

    await page.goto(cloud.gw.url + "/ui/#/users")
    await page.wait_for_selector("#users tbody tr")
    await page.fill("#f-name", "carol")
    await page.click("form button[type=submit]")
    await page.wait_for_selector("#totp-qr")
    src = await page.get_attribute("#totp-qr", "src") or ""
    assert src.startswith("data:image/png;base64,")
    assert len(await page.text_content("#totp-secret") or "") >= 16
    await page.locator("#users tbody tr", has_text="carol").wait_for()
    await shot(page, "08-users")

    await page.goto(cloud.gw.url + "/ui/#/log")
    await page.locator("#log tbody tr", has_text="user.created").first.wait_for()
    await shot(page, "09-event-log")
    await context.close()
