"""Chromium (Debian's package) driven by playwright against the real ComfyUI frontend."""
import pathlib

import pytest

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: run scripts/provision.sh --dev as root to install it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, comfy_server, tmp_path):
    """A fresh page on the ComfyUI frontend, loaded and ready; console errors are collected."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.goto(comfy_server.url)
    page.wait_for_function("() => window.app && window.app.graph && window.app.canvas", timeout=60_000)
    page.evaluate("() => { window.app.graph.clear(); window.app.canvas.setDirty(true, true); }")
    yield page
    page.screenshot(path=str(tmp_path / "last.png"))
    context.close()
