"""The dashboard: a Starlette app that reads runs from disk and steers them through control/.

    GET  /  /run/{key}  /compare          the page (one HTML file; the script draws each view)
    GET  /static/{name}                   app.js, style.css, plotly.min.js (from the installed plotly)
    GET  /api/runs                        the runs table
    GET  /api/run/{key}                   run.json, config, status, snapshot and image lists
    GET  /api/run/{key}/metrics           downsampled series (?names=a,b&points=N&xmin=&xmax=)
    GET  /api/run/{key}/events            the last lines of events.log
    GET  /api/run/{key}/file/{path}       a file of the run (?download=1 for an attachment)
    POST /api/run/{key}/control/{cmd}     pause, resume, validate, save, stop
    GET  /api/compare                     ?runs=a,b&metric=loss (overlay) or &step=N (snapshot table)

Reads are open on the address the server binds, and reach only files whose real
path lies inside a run under the roots (`catalog.confined`). Control needs the
JSON header the page sends (a cross-site form cannot), a small JSON object as
body, an Origin (when sent) equal to this server's scheme, host and port, and the
token when one is set (always when bound to a non-loopback address).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import math
import os
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import BadInputError, RunforgeError
from ..run import control
from ..run.metrics import read_metrics
from ..run.snapshot_fields import SNAPSHOT_GROUPS
from ..run.snapshots import load_snapshot
from . import analysis
from .catalog import Catalog, Refused, RunEntry, page_status

CONFIG_FILE = "config.json"
EVENTS_FILE = "events.log"
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
MAX_POINTS = 5000
DEFAULT_POINTS = 1500
TOKEN_HEADER = "x-runforge-token"
MAX_CONTROL_BODY = 4096
"""Bytes; a control body is `{}` or `{"command": "..."}`, so anything longer is not one."""

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Only our own scripts run: run-provided text can never become code, even if it got into the DOM.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}


def _plotly_js() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise BadInputError(None, "the plotly package is not installed (pip install plotly): "
                                  "the charts need its plotly.min.js")
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(_finite(data), status_code=status, headers=SECURITY_HEADERS)


def _finite(value: Any) -> Any:
    # JSON has no NaN: a non-finite number in a snapshot or status is shown as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _error(status: int, message: str) -> JSONResponse:
    return _json({"error": message}, status)


def _json_file(path: Path | None) -> Any:
    """A JSON file's content; None when it is absent, refused (`path` None) or damaged."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


class _Reject(Exception):
    """Answer the request with this status and a JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) origin; None for anything else (`null`, a path, user info)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None \
            or parts.path or parts.query or parts.fragment:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _same_origin(request: Request, origin: str) -> bool:
    here = _origin(f"{request.url.scheme}://{request.headers.get('host', '')}")
    return here is not None and _origin(origin) == here


async def _check_control_body(request: Request, command: str) -> None:
    """A control body must be `{}` or `{"command": command}`; it is read no further than
    MAX_CONTROL_BODY bytes, so a huge one costs no memory."""
    too_big = _Reject(413, f"a control body is at most {MAX_CONTROL_BODY} bytes of JSON")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_CONTROL_BODY):
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_CONTROL_BODY:  # a chunked body says no length up front
            raise too_big
    try:
        data = json.loads(bytes(body))
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise _Reject(400, 'the body must be a JSON object ({} or {"command": "..."})')
    unknown = sorted(set(data) - {"command"})
    if unknown:
        raise _Reject(400, f"unknown field {unknown[0]!r} in the body (only \"command\")")
    if data.get("command", command) != command:
        raise _Reject(400, f"the body's command {data['command']!r} is not the URL's {command!r}")


def _float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def create_app(roots: Sequence[str | os.PathLike[str]], *, token: str | None = None,
               allowed_hosts: Sequence[str] | None = None, warm_runs: int = 20) -> Starlette:
    """The dashboard over `roots`. `token`: required for control when set. `allowed_hosts`: the
    Host header values accepted (against DNS rebinding); None accepts any. `warm_runs`: how many
    of the newest runs have their metrics read in the background at start."""
    catalog = Catalog(roots)
    plotly_js = _plotly_js()
    index_html = (STATIC_DIR / "index.html").read_bytes()

    def entry_of(request: Request) -> RunEntry:
        try:
            return catalog.get(request.path_params["key"])
        except KeyError:
            raise _Reject(404, f"no run {request.path_params['key']!r} under the served roots") from None

    async def page(request: Request) -> Response:
        return Response(index_html, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            return FileResponse(plotly_js, media_type="text/javascript",
                                headers={**SECURITY_HEADERS, "Cache-Control": "max-age=86400"})
        if name not in STATIC_FILES:
            return _error(404, "no such static file")
        return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)

    async def runs(request: Request) -> Response:
        rows = await run_in_threadpool(catalog.rows)
        return _json({"roots": [str(r) for r in catalog.roots], "runs": rows})

    def run_detail(entry: RunEntry) -> dict[str, Any]:
        info = catalog.info(entry)
        snapshots = [{"step": step, "file": entry.relative(path)} for step, path in entry.snapshots()]
        images: dict[str, list[dict[str, Any]]] = {}
        for path in entry.images():
            step, _, name = path.stem.removeprefix("step_").partition("_")
            if step.isdigit():
                images.setdefault(name, []).append({"step": int(step), "file": entry.relative(path)})
        for shots in images.values():
            shots.sort(key=lambda shot: shot["step"])  # step_{step:04d}: names sort wrong past 9999
        row = catalog.row(entry)
        return {"key": entry.key, "info": info, "summary": row or {},
                "config": _json_file(entry.path(CONFIG_FILE)),
                "status": page_status(catalog.status(entry), row), "snapshots": snapshots,
                "images": images, "warnings": entry.outside_folders(info),
                "snapshot_groups": SNAPSHOT_GROUPS, "control_needs_token": token is not None}

    async def run_api(request: Request) -> Response:
        entry = entry_of(request)
        return _json(await run_in_threadpool(run_detail, entry))

    chart_cache: dict[tuple[Any, ...], tuple[tuple[Any, ...], bytes]] = {}

    def metrics_body(entry: RunEntry, names: list[str] | None, points: int, x_min: float | None,
                     x_max: float | None) -> bytes:
        # Every open page of a run asks for the same series each second: answer from the last
        # encoding until the log grows, so many viewers cost about as much as one.
        store = catalog.store(entry)
        cache_key = (entry.dir, tuple(names) if names else None, points, x_min, x_max)
        version = store.version
        hit = chart_cache.get(cache_key)
        if hit is not None and hit[0] == version:
            return hit[1]
        available = store.names()
        chosen = available if names is None else [n for n in names if n in available]
        series = {name: store.chart(name, points, x_min, x_max) for name in chosen}
        body = _json({"names": available, "series": series, "lines": store.lines,
                      "last_step": store.last_step}).body
        if len(chart_cache) >= 256:
            chart_cache.clear()
        chart_cache[cache_key] = (version, body)
        return body

    def points_of(request: Request) -> int:
        try:
            points = int(request.query_params.get("points", DEFAULT_POINTS))
        except ValueError:
            points = DEFAULT_POINTS
        return max(10, min(MAX_POINTS, points))

    async def metrics(request: Request) -> Response:
        entry = entry_of(request)
        raw = request.query_params.get("names")
        names = [n for n in raw.split(",") if n] if raw else None
        body = await run_in_threadpool(metrics_body, entry, names, points_of(request),
                                       _float_param(request, "xmin"), _float_param(request, "xmax"))
        return Response(body, media_type="application/json", headers=SECURITY_HEADERS)

    async def events(request: Request) -> Response:
        entry = entry_of(request)
        try:
            tail = max(1, min(2000, int(request.query_params.get("tail", 200))))
        except ValueError:
            tail = 200
        lines = await run_in_threadpool(_tail_lines, entry.path(EVENTS_FILE), tail)
        return _json({"lines": lines})

    async def run_file(request: Request) -> Response:
        entry = entry_of(request)
        try:
            path = catalog.file(entry, request.path_params["path"])
        except Refused:
            return _error(403, "refused: files are served only from inside the run")
        except FileNotFoundError:
            return _error(404, "no such file in the run")
        headers = dict(SECURITY_HEADERS)
        if request.query_params.get("download"):
            return FileResponse(path, headers=headers, filename=path.name)
        media = {".json": "application/json", ".png": "image/png", ".jsonl": "application/x-ndjson",
                 ".log": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
                 ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}.get(path.suffix.lower(), "application/octet-stream")
        return FileResponse(path, media_type=media, headers=headers)

    async def snapshot(request: Request) -> Response:
        entry = entry_of(request)
        try:
            step = int(request.path_params["step"])
        except ValueError:
            return _error(400, "step must be an integer")
        for found, path in await run_in_threadpool(entry.snapshots):
            if found == step:
                try:
                    return _json({"step": step, "file": entry.relative(path),
                                  "data": await run_in_threadpool(load_snapshot, path)})
                except RunforgeError as exc:
                    return _error(422, str(exc))
        return _error(404, f"no snapshot at step {step}")

    async def control_command(request: Request) -> Response:
        command = request.path_params["command"]
        if command not in control.COMMANDS:
            return _error(400, f"unknown command {command!r}; choose from {', '.join(control.COMMANDS)}")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "control requests must be JSON (application/json)")
        origin = request.headers.get("origin")
        if origin is not None and not _same_origin(request, origin):
            return _error(403, f"refused: control request from another origin ({origin!r})")
        if token is not None and not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(),
                                                         token.encode()):
            return _error(403, "refused: this dashboard needs its control token (printed when it started)")
        await _check_control_body(request, command)
        entry = entry_of(request)
        info = catalog.info(entry)
        status = (catalog.status(entry) or {})
        row = catalog.row(entry)
        if row is None or row["status"] != "running":
            return _error(409, f"run {info.get('name')} is {row['status'] if row else 'unknown'}, not running")
        if entry.path(control.CONTROL_DIR) is None:
            return _error(403, f"refused: {control.CONTROL_DIR}/ of run {info.get('name')} links out of the run")
        try:
            path = control.send(entry.dir, command)
        except OSError as exc:
            return _error(409, f"cannot write to {control.CONTROL_DIR}/ of run {info.get('name')} "
                               f"({exc.strerror or exc})")
        return _json({"sent": command, "file": path.name, "step": status.get("step_current")})

    async def compare(request: Request) -> Response:
        keys = [k for k in request.query_params.get("runs", "").split(",") if k]
        if not keys:
            return _error(400, "give runs=KEY,KEY")
        try:
            entries = [catalog.get(k) for k in keys]
        except KeyError as exc:
            return _error(404, f"no run {exc.args[0]!r} under the served roots")
        metric = request.query_params.get("metric")
        if metric:
            points = points_of(request)

            def overlay() -> dict[str, Any]:
                series = {}
                for entry in entries:
                    series[entry.key] = catalog.store(entry).chart(metric, points)
                return {"metric": metric, "series": series}

            return _json(await run_in_threadpool(overlay))
        step_raw = request.query_params.get("step")
        try:
            step = int(step_raw) if step_raw else None
        except ValueError:
            return _error(400, "step must be an integer")

        def table() -> dict[str, Any]:
            by_dir = {e.dir: e for e in entries}

            def metrics_inside(run_dir: Path) -> list[dict[str, Any]]:
                path = by_dir[run_dir].metrics_file()
                return read_metrics(path) if path is not None else []

            result = analysis.compare([e.dir for e in entries], step,
                                      snapshots=lambda run_dir: by_dir[run_dir].snapshots(), metrics=metrics_inside)
            result.update(metrics=sorted(set().union(*(catalog.store(e).names() for e in entries))), keys=keys)
            return result

        try:
            return _json(await run_in_threadpool(table))
        except RunforgeError as exc:
            return _error(404, str(exc))

    async def rejected(request: Request, exc: _Reject) -> Response:
        return _error(exc.status, str(exc))

    async def unreadable(request: Request, exc: Exception) -> Response:
        return _error(422, str(exc))  # a damaged run.json or snapshot: say which, do not crash

    routes = [
        Route("/", page),
        Route("/run/{key}", page),
        Route("/compare", page),
        Route("/static/{name}", static),
        Route("/api/runs", runs),
        Route("/api/run/{key}", run_api),
        Route("/api/run/{key}/metrics", metrics),
        Route("/api/run/{key}/events", events),
        Route("/api/run/{key}/snapshot/{step}", snapshot),
        Route("/api/run/{key}/file/{path:path}", run_file),
        Route("/api/run/{key}/control/{command}", control_command, methods=["POST"]),
        Route("/api/compare", compare),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if warm_runs:
            threading.Thread(target=catalog.warm, args=(warm_runs,), name="runforge-warm", daemon=True).start()
        yield

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={_Reject: rejected, RunforgeError: unreadable})
    app.state.catalog = catalog
    return app if allowed_hosts is None else HostGuard(app, allowed_hosts)  # type: ignore[return-value]


class HostGuard:
    """Refuses requests for any other Host, so a page on a rebinding DNS name cannot reach the API."""

    def __init__(self, app: Starlette, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.state = app.state
        self.allowed_hosts = set(allowed_hosts)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host not in self.allowed_hosts:
                await _error(400, f"refused: unexpected Host header {host!r}")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _tail_lines(path: Path | None, count: int) -> list[str]:
    if path is None:
        return []  # events.log links out of the run
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * count))
            data = f.read()
    except OSError:  # missing, or not a file
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > 256 * count:
        lines = lines[1:]  # the first line read may be cut
    return lines[-count:]
