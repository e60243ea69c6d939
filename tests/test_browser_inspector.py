"""The token inspector in a real JupyterLab, driven by Debian's Chromium through Playwright.

A JupyterLab server starts on a free loopback port with a temporary root (no token: loopback
only). The inspector notebook, executed once with papermill so that its stored MLTFR run exists,
is opened in the browser and run top to bottom; the test then changes the selected user and the
K slider and checks that the token table shown on the page changes. It also opens the executed
table2 notebook and checks that its figure is shown. A screenshot of the inspector is saved to
``test-artifacts/token_inspector.png``. The server is stopped in every outcome.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_notebooks import SMALL, execute, link_cached_inputs, QUICK_SOURCES

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update"]

playwright_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    link_cached_inputs(QUICK_SOURCES, ["ml-100k"])
    base = tmp_path_factory.mktemp("lab")
    shared = {"runs": base / "runs", "figures": base / "figures", "executed": base / "root"}
    execute("token_inspector", shared)
    execute("table2", shared)
    # Render every cell (JupyterLab 4 otherwise only renders cells near the viewport) and no news popup.
    settings = base / "settings" / "@jupyterlab"
    (settings / "notebook-extension").mkdir(parents=True)
    (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    (settings / "apputils-extension").mkdir()
    (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port = free_port()
    log = open(base / "jupyter.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         f"--ServerApp.root_dir={shared['executed']}", f"--LabApp.user_settings_dir={base / 'settings'}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "JUPYTER_PLATFORM_DIRS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: {(base / 'jupyter.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def page(lab):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.set_default_timeout(300_000)
            yield page
        finally:
            browser.close()


def open_and_run_all(page, url: str, name: str) -> None:
    page.goto(f"{url}/lab/tree/{name}")
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    select = page.locator(".jp-Dialog button", has_text="Select")  # the kernel chooser, when it asks
    try:
        select.wait_for(timeout=15_000)
        select.click()
    except playwright_api.TimeoutError:
        pass
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", state="attached")
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def tokens_text(page) -> str:
    return page.locator(".widget-html", has_text="top-").first.inner_text()


def test_inspector_widgets_respond_in_jupyterlab(lab, page):
    open_and_run_all(page, lab, "token_inspector-ml-100k.ipynb")
    page.wait_for_selector("text=selected tokens", state="attached")
    page.wait_for_function("() => [...document.querySelectorAll('.widget-html')]"
                           ".some(e => e.innerText.includes('top-'))")
    before = tokens_text(page)
    assert "top-" in before and "score" in before

    user = page.locator(".widget-dropdown", has=page.locator("label", has_text="user")).locator("select")
    current = user.input_value()
    options = [o for o in user.locator("option").all_inner_texts() if o != current]
    user.select_option(label=options[0])
    page.wait_for_function("(old) => { const e = [...document.querySelectorAll('.widget-html')]"
                           ".find(e => e.innerText.includes('top-')); return e && e.innerText !== old; }",
                           arg=before)
    after_user = tokens_text(page)
    assert after_user != before

    readout = page.locator(".widget-hslider", has=page.locator("label", has_text="K")).locator(".widget-readout")
    readout.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("5")
    page.keyboard.press("Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.widget-html')]"
                           ".some(e => e.innerText.includes('top-5'))")
    after_k = tokens_text(page)
    assert "top-5" in after_k and after_k != after_user
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "token_inspector.png"), full_page=True)


def test_executed_notebook_shows_its_figure(lab, page):
    page.goto(f"{lab}/lab/tree/table2-ml-100k.ipynb")
    page.wait_for_selector(".jp-OutputArea-output img[src^='data:image/png']")
    assert page.locator(".jp-OutputArea-output img").count() >= 1
