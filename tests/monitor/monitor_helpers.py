"""Shared by the monitor tests: real dashboard and trainer processes, and small runs made with the run layer."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import runforge
from conftest import wait_for  # noqa: F401  (re-exported for the monitor tests)

PYTHON = sys.executable
QUIET_ENV = {"RUNFORGE_NO_KEYS": "1", "PYTHONUNBUFFERED": "1"}


def make_run(root: Path, dirname: str, *, name: str | None = None, steps: int = 20,
             snapshots: dict[int, dict[str, Any]] | None = None, loss=lambda step: 1.0 / step,
             config: dict[str, Any] | None = None) -> Path:
    """A finished run with `loss` (and `losses.l1`) every step, and the given snapshots; its config
    is `{"steps": steps}` and `config`.

    `name` is written into run.json afterwards: the run layer refuses names that are not plain,
    but the dashboard must still show whatever a (hand-edited) run.json says, as text."""
    with runforge.Run(trainer="unit", config={"steps": steps, **(config or {})}, out=root / dirname, steps=steps,
                      tensorboard=False, progress=False, handle_signals=False) as run:
        for step in range(1, steps + 1):
            run.log(step, {"loss": loss(step), "losses": {"l1": loss(step) / 2}})
        for step, stats in (snapshots or {}).items():
            run.snapshot(step, stats)
    if name is not None:
        edit_info(root / dirname, name=name)
    return root / dirname


def running_info() -> dict[str, Any]:
    """run.json fields of a run whose trainer is this test process (alive, so the run is `running`)."""
    return {"status": "running", "pid": os.getpid(), "pid_start": None, "host": socket.gethostname()}


LAST_ETA = "0:42:17"


def make_crashed(root: Path, dirname: str = "crashed") -> Path:
    """A toy run that died mid-training: run.json says running (with the pid of a process that has
    exited), status.json is its last heartbeat, two minutes old, with an ETA."""
    run_dir = make_run(root, dirname, steps=20)
    gone = subprocess.Popen([PYTHON, "-c", "pass"])
    gone.wait()
    edit_info(run_dir, trainer="toy", step=12, status="running", pid=gone.pid, pid_start=-1,
              host=socket.gethostname())
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    status.update(status="running", training_active=True, step_current=12, step_max=20,
                  eta_total_formatted=LAST_ETA, eta_epoch_formatted=LAST_ETA, last_update_time=time.time() - 120)
    (run_dir / "status.json").write_text(json.dumps(status), encoding="utf-8")
    return run_dir


def edit_info(run_dir: Path, **fields: Any) -> dict[str, Any]:
    """Change fields of a run's run.json, as a hand edit (or another tool) would."""
    info = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    info.update(fields)
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    return info


class Server:
    """`runforge serve` in its own process, on a port it picks itself."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        # stderr goes to a file: a pipe nobody reads could fill up and stall the server
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([PYTHON, "-m", "runforge", "serve", "--port", "0", *args], cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env={**os.environ, **QUIET_ENV})
        first = self.proc.stdout.readline()
        match = re.search(r"http://([^/]+):(\d+)/", first)
        if not match:
            self.stop()
            raise AssertionError(f"serve did not start: {first!r}")
        self.port = int(match.group(2))
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = None
        if "--host" in args and args[args.index("--host") + 1] not in ("127.0.0.1", "localhost"):
            token_line = self.proc.stdout.readline()
            self.token = re.search(r"control token: (\S+)", token_line).group(1)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes, dict[str, str]]:
        """One raw HTTP request: the path is sent exactly as given (no client-side normalising)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            all_headers = {"Host": f"127.0.0.1:{self.port}", **(headers or {})}
            if body is not None:
                all_headers["Content-Length"] = str(len(body))
            for key, value in all_headers.items():
                conn.putheader(key, value)
            conn.endheaders(body)
            response = conn.getresponse()
            return response.status, response.read(), {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()

    def get_json(self, path: str) -> Any:
        status, body, _ = self.request("GET", path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def control(self, key: str, command: str, token: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-Runforge-Token"] = token
        status, body, _ = self.request("POST", f"/api/run/{key}/control/{command}", headers, b"{}")
        return status, json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.stderr.seek(0)
        errors = self.stderr.read().decode("utf-8", "replace")
        self.stderr.close()
        assert "Traceback" not in errors, errors  # the server never failed a request with an exception


def start_toy(out: Path, *flags: str) -> subprocess.Popen:
    """`runforge train toy --preset live` (3000 steps, 20 ms each) writing to `out`."""
    return subprocess.Popen([PYTHON, "-m", "runforge", "train", "toy", "--preset", "live", "--out", str(out),
                             "--progress", "lines", "--no_tensorboard", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            env={**os.environ, **QUIET_ENV})




def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
HAS_CHROMIUM = Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()
NO_CHROMIUM = "Debian chromium + chromium-driver are not installed (make setup installs them)"


def chromium(profile: Path, flags: tuple[str, ...], page_load_timeout: float, browser_logs: bool = False) -> Any:
    """A headless Debian chromium through selenium (the caller quits it); skips the test without selenium."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in flags:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if browser_logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(page_load_timeout)
    return driver


BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1000")


# SwiftShader: WebGL drawn on the CPU, as on a machine without a GPU (viser's 3D view needs WebGL)
WEBGL_FLAGS = ("--headless=new", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
               "--no-first-run", "--disable-sync", "--disable-dev-shm-usage", "--window-size=900,700",
               "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist")


@pytest.fixture
def webgl_browser(tmp_path: Path) -> Any:
    """A headless chromium that draws WebGL, for one test (a fixture: import it into the test module)."""
    if not HAS_CHROMIUM:
        pytest.skip(NO_CHROMIUM)
    driver = chromium(tmp_path / "profile", WEBGL_FLAGS, 60)
    try:
        yield driver
    finally:
        driver.quit()


def canvas_variance(driver: Any) -> float:
    """The variance of what the page's largest canvas shows (copied through a 2D canvas); -1 without one."""
    return driver.execute_script("""
        const c = [...document.querySelectorAll('canvas')].sort((a, b) => b.width * b.height - a.width * a.height)[0];
        if (!c || !c.width) return -1;
        const o = document.createElement('canvas'); o.width = 160; o.height = 120;
        const g = o.getContext('2d'); g.drawImage(c, 0, 0, 160, 120);
        const d = g.getImageData(0, 0, 160, 120).data; let s = 0, s2 = 0, n = 0;
        for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; n++; }
        return s2 / n - (s / n) ** 2;""")


def wait_for_scene(driver: Any) -> float:
    """Waits for a viser page's canvas to draw more than a background; its `canvas_variance`."""
    wait_for(lambda: driver.execute_script(
        "return [...document.querySelectorAll('canvas')].some(c => c.width > 100 && c.height > 100)"),
        90, 0.5, "viser's canvas")
    # the scene arrives over the websocket after the page
    return wait_for(lambda: (v := canvas_variance(driver)) > 20 and v, 120, 0.5, "the scene to be drawn on the canvas")


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    """A headless chromium for one test, quit after it (a fixture: import it into the test module)."""
    driver = chromium(tmp_path / "profile", BROWSER_FLAGS, 30, browser_logs=True)
    try:
        yield driver
    finally:
        driver.quit()


def css(driver: Any, selector: str) -> list[Any]:
    """The page's elements matching a CSS selector."""
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def severe_logs(driver: Any) -> list[dict[str, Any]]:
    """The browser console's errors since the last call (a failed script, a refused resource)."""
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


@contextlib.contextmanager
def open_page(driver: Any, root: Path, path: str) -> Iterator[Server]:
    """`runforge serve ROOT` with the browser on its page `path`; the server is stopped afterwards."""
    server = Server(str(root))
    try:
        driver.get(server.url + path)
        yield server
    finally:
        server.stop()
