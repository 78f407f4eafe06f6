"""The course in a real JupyterLab, driven in headless Chromium (Debian's package) with Playwright.

A JupyterLab server runs on loopback (random free port, token auth) over a temporary copy of
``notebooks/`` with ``PHI3LAB_PROFILE=ci``, so the committed notebooks are never touched (no
autosave into the repository). Screenshots land in ``test-artifacts/`` (git-ignored).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import nbformat
import pytest

from phi3lab.paths import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO_ROOT / "test-artifacts"
NOTEBOOKS = REPO_ROOT / "notebooks"
TRAINING_NOTEBOOK = "02_local_lora_training.ipynb"
DATA_NOTEBOOK = "01_data_preparation.ipynb"
WAIT_MS = 120_000  # generous: the machine is shared with other jobs

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="/usr/bin/chromium is missing: install Debian's package (apt-get install chromium)")

# Lab settings for the test user: every cell attached to the DOM (no windowing, so outputs of
# cells below the fold exist), and no news/update toasts fetched from the internet.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                        "checkForUpdates": False},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_server(url: str, token: str, server: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {server.returncode} before it answered")
        try:
            if httpx.get(f"{url}/api/status", headers={"Authorization": f"token {token}"}, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)  # readiness probe interval, not synchronisation
    raise RuntimeError(f"jupyter lab did not answer on {url} within {timeout} s")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server over a temp copy of the notebooks; yields (base URL, token, root dir)."""
    home = tmp_path_factory.mktemp("lab")
    root = home / "root"
    shutil.copytree(NOTEBOOKS, root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for shared in ("data", "images"):  # relative links such as ../images/x.svg keep working
        (root / shared).symlink_to(REPO_ROOT / shared, target_is_directory=True)
    settings = home / "settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))

    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "PHI3LAB_PROFILE": "ci",
           "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    log = open(home / "server.log", "w")  # noqa: SIM115 (closed in teardown)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--allow-root"],  # CI containers run as root
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(url, token, server)
        yield url, token, root
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(home / "server.log", ARTIFACTS / "jupyterlab-server.log")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{request.node.name}-final.png")
    (ARTIFACTS / f"{request.node.name}-page-errors.txt").write_text("\n".join(errors))
    context.close()


# ----- driving JupyterLab ------------------------------------------------------------------
# Commands go through JupyterLab's own command registry (window.jupyterapp, as JupyterLab's
# Galata test tool does); cells are clicked and widgets are typed into like a learner would.
CURRENT_NOTEBOOK = "window.jupyterapp.shell.currentWidget"


def open_notebook(page, lab, name: str) -> None:
    url, token, _ = lab
    page.goto(f"{url}/lab/tree/notebooks/{name}?token={token}")
    page.wait_for_function(
        f"""() => {{
            const nb = window.jupyterapp && {CURRENT_NOTEBOOK};
            return nb && nb.context && nb.context.path.endsWith({json.dumps(name)})
                && nb.sessionContext.session && nb.sessionContext.session.kernel
                && nb.sessionContext.session.kernel.status === 'idle';
        }}""")
    # Committed notebooks keep checked outputs with the execution count an in-order run gives, so
    # "the count changed" would never fire for them: start from a cleared notebook, as a learner can.
    run_command(page, "notebook:clear-all-cell-outputs")
    page.wait_for_function(
        f"""() => {{
            const cells = {CURRENT_NOTEBOOK}.content.model.cells;
            for (let i = 0; i < cells.length; i++)
                if (cells.get(i).type === 'code' && cells.get(i).executionCount !== null) return false;
            return true;
        }}""")


def run_command(page, command: str) -> None:
    """Start a JupyterLab command without awaiting it; callers wait for its effect with a timeout."""
    page.evaluate("(cmd) => { window.jupyterapp.commands.execute(cmd); }", command)


def cell_locator(page, index: int):
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)


def wait_until_executed(page, indices: list[int], previous: dict | None = None) -> None:
    """Wait until each code cell has a new execution count, has finished, and the kernel is idle."""
    page.wait_for_function(
        f"""([indices, previous]) => {{
            const nb = {CURRENT_NOTEBOOK};
            const cells = nb.content.model.cells;
            return indices.every(i => {{
                    const count = cells.get(i).executionCount;
                    return count !== null && count !== (previous[i] ?? null)
                        && (cells.get(i).executionState || 'idle') === 'idle';
                }}) && nb.sessionContext.session.kernel.status === 'idle';
        }}""", arg=[indices, previous or {}])


def cell_errors(page) -> list[str]:
    return page.evaluate(
        f"""() => {{
            const cells = {CURRENT_NOTEBOOK}.content.model.cells;
            const errors = [];
            for (let i = 0; i < cells.length; i++) {{
                const cell = cells.get(i);
                if (cell.type !== 'code') continue;
                for (const out of cell.outputs.toJSON())
                    if (out.output_type === 'error') errors.push(`cell ${{i + 1}}: ${{out.ename}}: ${{out.evalue}}`);
            }}
            return errors;
        }}""")


def run_cell_by_keyboard(page, index: int) -> None:
    """Click into a cell and press Shift+Enter, as a learner does."""
    before = page.evaluate(f"(i) => {CURRENT_NOTEBOOK}.content.model.cells.get(i).executionCount", index)
    cell = cell_locator(page, index)
    cell.scroll_into_view_if_needed()
    cell.locator(".jp-InputPrompt").click()  # selects the cell in command mode
    page.wait_for_function(f"(i) => {CURRENT_NOTEBOOK}.content.activeCellIndex === i", arg=index)
    page.keyboard.press("Shift+Enter")
    wait_until_executed(page, [index], {index: before})


def code_cells(path: Path) -> list[tuple[int, str]]:
    nb = nbformat.read(path, as_version=4)
    return [(i, cell.source) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]


def set_widget_value(page, css_class: str, value: str) -> None:
    """Type into a widget's editable part: a slider's readout or a text box, then Enter."""
    widget = page.locator(f".{css_class}").first
    widget.wait_for(state="visible")
    editable = widget.locator(".widget-readout, input").first
    editable.click()
    page.keyboard.press("Control+A")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def widget_shows(page, css_class: str) -> str:
    widget = page.locator(f".{css_class}").first
    return widget.evaluate("""(el) => {
        const input = el.querySelector('input');
        const readout = el.querySelector('.widget-readout');
        return readout ? readout.textContent : (input ? input.value : el.textContent);
    }""")


def read_number(text: str, field: str) -> float:
    match = re.search(rf"\b{field}\b\W+(-?[0-9.]+(?:e-?\d+)?)", text)
    assert match, f"'{field}' not found in the cell output:\n{text}"
    return float(match.group(1))


# ----- the tests -----------------------------------------------------------------------------
def require(name: str) -> Path:
    path = NOTEBOOKS / name
    assert path.is_file(), f"{path} does not exist yet; the browser test drives it"
    return path


def test_training_widgets_change_the_config(lab, page):
    """Notebook 02: show the hyperparameter panel, move learning rate and epochs, see the new config."""
    cells = code_cells(require(TRAINING_NOTEBOOK))
    panel_at = next((n for n, (i, src) in enumerate(cells) if re.search(r"\bHyperparameterPanel\(", src)), None)
    assert panel_at is not None and panel_at + 1 < len(cells), \
        f"{TRAINING_NOTEBOOK} needs a cell that shows HyperparameterPanel followed by a cell using panel.config"
    panel_cell, next_cell = cells[panel_at][0], cells[panel_at + 1][0]

    open_notebook(page, lab, TRAINING_NOTEBOOK)
    page.evaluate(f"(i) => {{ {CURRENT_NOTEBOOK}.content.activeCellIndex = i; }}", panel_cell)
    run_command(page, "notebook:run-all-above")
    wait_until_executed(page, [i for i, _ in cells[:panel_at]])
    assert cell_errors(page) == []

    run_cell_by_keyboard(page, panel_cell)
    assert cell_errors(page) == []
    set_widget_value(page, "phi3lab-learning-rate", "0.001")
    set_widget_value(page, "phi3lab-epochs", "3")
    cell_locator(page, panel_cell).screenshot(path=ARTIFACTS / "02-hyperparameter-panel.png")
    assert float(widget_shows(page, "phi3lab-learning-rate")) == pytest.approx(1e-3, rel=0.05)
    assert widget_shows(page, "phi3lab-epochs").strip() == "3"

    run_cell_by_keyboard(page, next_cell)
    assert cell_errors(page) == []
    output = cell_locator(page, next_cell).locator(".jp-OutputArea").inner_text()
    cell_locator(page, next_cell).screenshot(path=ARTIFACTS / "02-config-after-change.png")
    assert read_number(output, "learning_rate") == pytest.approx(1e-3, rel=0.05)
    assert read_number(output, "epochs") == 3


def test_data_notebook_plots_render(lab, page):
    """Notebook 01: run every cell in the browser; every figure output is a loaded image."""
    cells = code_cells(require(DATA_NOTEBOOK))
    open_notebook(page, lab, DATA_NOTEBOOK)
    run_command(page, "notebook:run-all-cells")
    wait_until_executed(page, [i for i, _ in cells])
    assert cell_errors(page) == []

    figures = page.evaluate(
        f"""() => {{
            const cells = {CURRENT_NOTEBOOK}.content.model.cells;
            let n = 0;
            for (let i = 0; i < cells.length; i++)
                if (cells.get(i).type === 'code')
                    for (const out of cells.get(i).outputs.toJSON())
                        if (out.data && Object.keys(out.data).some(m => m.startsWith('image/'))) n++;
            return n;
        }}""")
    assert figures > 0, f"{DATA_NOTEBOOK} produced no figure outputs"
    images = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output img")
    images.nth(figures - 1).wait_for(state="attached")
    loaded = images.evaluate_all("(imgs) => imgs.map(img => img.complete && img.naturalWidth > 0)")
    assert len(loaded) == figures and all(loaded), f"{figures} figures in the kernel, images loaded: {loaded}"
    images.first.scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "01-first-plot.png")


def test_lab_renders_and_drives_ipywidgets(lab, page):
    """The machinery itself on a two-cell notebook: a slider typed into, read back by the kernel."""
    _, _, root = lab
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        nbformat.v4.new_code_cell("import ipywidgets as w\nslider = w.FloatLogSlider(value=1e-4, min=-6, max=-2, "
                                  "description='learning rate')\nslider.add_class('probe-slider')\nslider"),
        nbformat.v4.new_code_cell("print(f'value={slider.value:.6g}')"),
    ]
    nbformat.write(nb, root / "notebooks" / "widget_probe.ipynb")
    open_notebook(page, lab, "widget_probe.ipynb")
    run_cell_by_keyboard(page, 0)
    set_widget_value(page, "probe-slider", "0.001")
    run_cell_by_keyboard(page, 1)
    assert read_number(cell_locator(page, 1).locator(".jp-OutputArea").inner_text(), "value") == pytest.approx(1e-3)
