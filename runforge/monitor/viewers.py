"""The `runforge view` servers the run page opens: `POST /api/run/{key}/view` (docs/monitor.md, "3D views").

Each viewer is a `runforge view RUN_DIR --port 0` child process of the dashboard, one per run and
listening address, reused while it is alive. At most `MAX_VIEWERS` run at once (opening one more
stops the one asked for least recently), and the app's lifespan stops them all when the dashboard
shuts down.

A viewer listens on the address the browser reached the dashboard by (the local address of the
request's connection): 127.0.0.1 for a loopback dashboard; for one served on 0.0.0.0, the interface
the browser came in on, so the browser can reach the viewer the same way.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import IO

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadInputError
from ..view import view_command
from .routes import Reject, catalog_of, check_control_body, entry_of, json_response, refuse_foreign

MAX_VIEWERS = 4
START_SECONDS = 120.0
"""How long a viewer may take to load a run's maps or PLYs and listen (a big splat run takes a while)."""
STOP_SECONDS = 5.0
_URL_LINE = re.compile(r"runforge view: http://\S+:(\d+)/ ")
_LOOPBACK_NAMES = ("127.0.0.1", "localhost")


@dataclass
class Viewer:
    proc: subprocess.Popen[bytes]
    port: int
    output: IO[bytes]  # its stdout and stderr: a file, so a pipe nobody reads can never stall it

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Viewers:
    """The viewer processes of one dashboard, least recently asked for first."""

    limit: int = MAX_VIEWERS
    running: dict[tuple[str, str], Viewer] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def open(self, run_dir: str, host: str) -> int:
        """The port of the viewer of `run_dir` listening on `host`, started unless one is alive."""
        async with self.lock:  # two clicks at once start one viewer
            key = (run_dir, host)
            viewer = self.running.pop(key, None)
            if viewer is not None and not viewer.alive():
                await run_in_threadpool(_stop, [viewer])
                viewer = None
            if viewer is None:
                oldest = []
                while len(self.running) >= self.limit:
                    oldest.append(self.running.pop(next(iter(self.running))))
                await run_in_threadpool(_stop, oldest)
                viewer = await _start(run_dir, host)
            self.running[key] = viewer
            return viewer.port

    def stop_all(self) -> None:
        viewers = list(self.running.values())
        self.running.clear()
        _stop(viewers)


async def _start(run_dir: str, host: str) -> Viewer:
    output = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "runforge", "view", run_dir, "--port", "0", "--host", host],
                            stdin=subprocess.DEVNULL, stdout=output, stderr=output)
    viewer = Viewer(proc, 0, output)
    try:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            exited = proc.poll() is not None
            output.seek(0)
            text = output.read().decode("utf-8", "replace")
            match = _URL_LINE.search(text)
            if match and not exited:
                viewer.port = int(match.group(1))
                return viewer
            if exited:
                lines = [line for line in text.splitlines() if line.strip()]
                raise Reject(422, f"runforge view could not show the run: {lines[-1] if lines else 'it exited'}")
            await asyncio.sleep(0.1)
        raise Reject(504, f"runforge view did not start listening within {START_SECONDS:.0f} s")
    except BaseException:  # also the request cancelled by the dashboard shutting down: no viewer left behind
        _stop([viewer])
        raise


def _stop(viewers: list[Viewer]) -> None:
    """Ctrl-C to each (the viewer closes its server), then a kill for one that does not exit in time."""
    for viewer in viewers:
        if viewer.alive():
            viewer.proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_SECONDS
    for viewer in viewers:
        try:
            viewer.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            viewer.proc.kill()
            viewer.proc.wait()
        viewer.output.close()


def _listen_host(request: Request) -> str:
    """The local address the request came in on (a test client's is no address: loopback then)."""
    server = request.scope.get("server")
    try:
        address = ipaddress.ip_address(server[0]) if server else None
    except ValueError:
        address = None
    if address is None:
        return "127.0.0.1"
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket: the viewer listens on IPv4
    return str(address)


def _url_host(request: Request, host: str) -> str:
    """The host of the viewer's URL: the one the browser used when that is a loopback name for the
    address the viewer listens on (so localhost stays localhost), else the address itself."""
    used = request.url.hostname or ""
    if used in _LOOPBACK_NAMES and ipaddress.ip_address(host).is_loopback:
        return used
    return f"[{host}]" if ":" in host else host


async def view_run(request: Request) -> Response:
    """POST: start (or find) the `runforge view` server of a voxel or splat run; `{"url": ...}`.
    With the checks of a control request, as it starts a process."""
    refused = refuse_foreign(request, "view")
    if refused is not None:
        return refused
    await check_control_body(request, "view")
    catalog = catalog_of(request)
    entry = entry_of(request)
    trainer = catalog.info(entry).get("trainer")
    if view_command(trainer, str(entry.dir)) is None:
        raise Reject(404, f"run {entry.key} ({trainer or 'unknown'} trainer) has no 3D view: "
                          "only voxel and splat runs have one")
    missing = [m for m in ("viser", "plyfile") if importlib.util.find_spec(m) is None]
    if missing:
        raise Reject(501, f"the 3D view needs {', '.join(missing)}, which this dashboard's Python lacks: "
                          "pip install 'runforge[view]'")
    from ..view.load import find_source  # numpy: here, with viser (which needs it) known to be installed

    try:
        frames = (await run_in_threadpool(find_source, entry.dir)).frames
    except BadInputError:
        raise Reject(404, f"run {entry.key} has nothing to view yet: no maps/step_*.json, final_map.json "
                          "or ply/point_cloud_*.ply") from None
    outside = [frame.path.name for frame in frames if entry.path(frame.path) is None]
    if outside:
        raise Reject(403, f"refused: {outside[0]} of run {entry.key} links out of the run")
    host = _listen_host(request)
    port = await request.app.state.viewers.open(os.path.realpath(entry.dir), host)
    return json_response({"url": f"http://{_url_host(request, host)}:{port}/"})
