"""The dashboard's request handlers (`app.create_app` puts them in its route table).

Each handler is a plain `async def handler(request)` that takes what it needs from
`request.app.state`, which `create_app` fills:

    catalog     the `Catalog` of runs under the served roots (every path goes through it)
    charts      the `ChartCache` of encoded metrics answers
    viewers     the `runforge view` processes the run pages started (viewers.py)
    token       the control token, or None when control needs none
    plotly_js   the path of the installed plotly.min.js
    index_html  the page's bytes

A handler that cannot answer raises `Reject` (or lets a `RunforgeError` out of a
damaged file); `EXCEPTION_HANDLERS` turns either into a JSON error.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from ..errors import BadInputError, RunforgeError
from ..run import control
from ..run.annotations import check_annotations, write_annotations
from ..run.layout import ANNOTATIONS_FILE, CONFIG_FILE, CONTROL_DIR, EVENTS_FILE, METRICS_FILE, SYSTEM_FILE
from ..run.metrics import read_metrics
from ..run.snapshot_fields import recorded_groups
from ..run.snapshots import load_snapshot
from ..run.system import read_system
from ..view import view_command
from . import analysis
from .cache import ChartCache
from .catalog import Catalog, Refused, RunEntry, page_status
from .row_fields import annotations_of
from .series import AXES, stretch_starts
from .media import images_by_name, run_media

STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {"style.css": "text/css", **{f"{page}.js": "text/javascript" for page in
                                            ("core", "charts", "fields", "media", "runs", "annotations", "run",
                                             "compare", "theme", "system", "hparams", "shortcuts", "view", "main")}}
MAX_POINTS = 5000
DEFAULT_POINTS = 1500
TOKEN_HEADER = "x-runforge-token"
MAX_CONTROL_BODY = 4096
"""Bytes; a control body is `{}` or `{"command": "..."}`, so anything longer is not one."""
MAX_ANNOTATIONS_BODY = 32768
"""Bytes; the longest note (`MAX_NOTE_BYTES`) and tags fit, even written with JSON escapes."""

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Only our own scripts run: run-provided text can never become code, even if it got into the DOM.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}

MEDIA_TYPES = {".json": "application/json", ".png": "image/png", ".jsonl": "application/x-ndjson",
               ".log": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8",
               ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".mp4": "video/mp4"}
"""How a run's file is served, by suffix; anything else is application/octet-stream."""


# ----------------------------------------------------------------------------- answers


def json_response(data: Any, status: int = 200) -> JSONResponse:
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


def error(status: int, message: str) -> JSONResponse:
    return json_response({"error": message}, status)


class Reject(Exception):
    """Answer the request with this status and a JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def rejected(request: Request, exc: Reject) -> Response:
    return error(exc.status, str(exc))


async def unreadable(request: Request, exc: Exception) -> Response:
    return error(422, str(exc))  # a damaged run.json or snapshot: say which, do not crash


EXCEPTION_HANDLERS: dict[Any, Callable[..., Any]] = {Reject: rejected, RunforgeError: unreadable}


# ----------------------------------------------------------------------------- request parts


def catalog_of(request: Request) -> Catalog:
    return request.app.state.catalog


def entry_of(request: Request) -> RunEntry:
    """The run named by the URL's {key}; 404 for a key that is not (or no longer) served."""
    try:
        return catalog_of(request).get(request.path_params["key"])
    except KeyError:
        raise Reject(404, f"no run {request.path_params['key']!r} under the served roots") from None


def entries_of(request: Request) -> list[RunEntry]:
    """The runs named by `?runs=KEY,KEY`; 400 without one, 404 naming every key that is not served."""
    catalog = catalog_of(request)
    keys = [k for k in request.query_params.get("runs", "").split(",") if k]
    if not keys:
        raise Reject(400, "give runs=KEY,KEY")
    unknown = []
    entries = []
    for key in keys:
        try:
            entries.append(catalog.get(key))
        except KeyError:
            unknown.append(key)
    if unknown:
        raise Reject(404, f"no run {', '.join(map(repr, unknown))} under the served roots")
    return entries


def float_param(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def points_of(request: Request) -> int:
    try:
        points = int(request.query_params.get("points", DEFAULT_POINTS))
    except ValueError:
        points = DEFAULT_POINTS
    return max(10, min(MAX_POINTS, points))


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


def same_origin(request: Request, origin: str) -> bool:
    here = _origin(f"{request.url.scheme}://{request.headers.get('host', '')}")
    return here is not None and _origin(origin) == here


async def json_body(request: Request, limit: int, what: str) -> Any:
    """The request's body as JSON (None when it is not JSON), read no further than `limit` bytes,
    so a huge one costs no memory; 413 naming `what` beyond that."""
    too_big = Reject(413, f"{what} is at most {limit} bytes of JSON")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # a chunked body says no length up front
            raise too_big
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError):
        return None


def refuse_foreign(request: Request, what: str) -> Response | None:
    """The error for a writing request that may not come from the page: not JSON (a cross-site
    form cannot send it), from another origin, or without the token when one is set; else None."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return error(415, f"{what} requests must be JSON (application/json)")
    origin = request.headers.get("origin")
    if origin is not None and not same_origin(request, origin):
        return error(403, f"refused: {what} request from another origin ({origin!r})")
    token = request.app.state.token
    if token is not None and not hmac.compare_digest(request.headers.get(TOKEN_HEADER, "").encode(),
                                                     token.encode()):
        return error(403, "refused: this dashboard needs its control token (printed when it started)")
    return None


async def check_control_body(request: Request, command: str) -> None:
    """A control body must be `{}` or `{"command": command}` (at most MAX_CONTROL_BODY bytes)."""
    data = await json_body(request, MAX_CONTROL_BODY, "a control body")
    if not isinstance(data, dict):
        raise Reject(400, 'the body must be a JSON object ({} or {"command": "..."})')
    unknown = sorted(set(data) - {"command"})
    if unknown:
        raise Reject(400, f"unknown field {unknown[0]!r} in the body (only \"command\")")
    if data.get("command", command) != command:
        raise Reject(400, f"the body's command {data['command']!r} is not the URL's {command!r}")


# ----------------------------------------------------------------------------- reading a run


def json_file(path: Path | None) -> Any:
    """A JSON file's content; None when it is absent, refused (`path` None) or damaged."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def tail_lines(path: Path | None, count: int) -> list[str]:
    """Up to the last `count` lines of a text file, from its last 256 bytes per line asked for (so a
    huge log costs no more than a short one); [] when it cannot be read."""
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


def run_detail(catalog: Catalog, entry: RunEntry, token_set: bool) -> dict[str, Any]:
    """What the run page shows of a run (the body of /api/run/{key})."""
    info = catalog.info(entry)
    snapshots = [{"step": step, "file": entry.relative(path)} for step, path in entry.snapshots()]
    images = images_by_name(entry)
    row = catalog.row(entry)
    return {"key": entry.key, "info": info, "summary": row or {},
            "config": json_file(entry.path(CONFIG_FILE)),
            "status": page_status(catalog.status(entry), row), "snapshots": snapshots,
            "images": images, "media": run_media(entry, images), "warnings": entry.outside_folders(info),
            "snapshot_groups": recorded_groups(info), "control_needs_token": token_set,
            "view_command": view_command(info.get("trainer"), str(entry.dir))}


def axis_of(request: Request) -> str:
    """The `x` parameter of a chart request: step (the default), time or wall."""
    axis = request.query_params.get("x") or "step"
    if axis not in AXES:
        raise Reject(400, f"x must be one of {', '.join(AXES)}, not {axis!r}")
    return axis


def wall_starts(catalog: Catalog, entry: RunEntry, axis: str) -> list[tuple[float, float]] | None:
    """What places a chart's x on the wall clock (the run's starts in run.json); None for another axis."""
    return stretch_starts(catalog.info(entry)) if axis == "wall" else None


def metrics_body(catalog: Catalog, charts: ChartCache, entry: RunEntry, names: list[str] | None, points: int,
                 x_min: float | None, x_max: float | None, axis: str = "step") -> bytes:
    """The encoded /metrics answer, from `charts` while the run's train.jsonl has not grown."""
    store = catalog.store(entry)
    cache_key = (entry.dir, tuple(names) if names else None, points, x_min, x_max, axis)
    version = store.version  # taken before the series: a line read meanwhile only means a rebuild later
    body = charts.get(cache_key, version)
    if body is not None:
        return body
    available = store.names()
    chosen = available if names is None else [n for n in names if n in available]
    starts = wall_starts(catalog, entry, axis)
    series = {name: store.chart(name, points, x_min, x_max, axis, starts) for name in chosen}
    body = json_response({"names": available, "series": series, "x": axis, "lines": store.lines,
                          "last_step": store.last_step, "warnings": store.warnings}).body
    charts.put(cache_key, version, body)
    return body


# ----------------------------------------------------------------------------- handlers


async def page(request: Request) -> Response:
    return Response(request.app.state.index_html, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


PARCOORDS_HEADERS = {**SECURITY_HEADERS, "Content-Security-Policy": SECURITY_HEADERS["Content-Security-Policy"]
                     .replace("script-src 'self'", "script-src 'self' 'unsafe-eval'")}
"""The hparams page's: plotly's WebGL parallel coordinates compile glue code for the GPU's limits at run
time (its precompiled set covers common GPUs only); still only our own script files run."""


async def hparams_page(request: Request) -> Response:
    return Response(request.app.state.index_html, media_type="text/html; charset=utf-8", headers=PARCOORDS_HEADERS)


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name == "plotly.min.js":
        return FileResponse(request.app.state.plotly_js, media_type="text/javascript",
                            headers={**SECURITY_HEADERS, "Cache-Control": "max-age=86400"})
    if name not in STATIC_FILES:
        return error(404, "no such static file")
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers=SECURITY_HEADERS)


async def runs(request: Request) -> Response:
    catalog = catalog_of(request)
    rows = await run_in_threadpool(catalog.rows)
    return json_response({"roots": [str(r) for r in catalog.roots], "runs": rows})


async def run_api(request: Request) -> Response:
    entry = entry_of(request)
    return json_response(await run_in_threadpool(run_detail, catalog_of(request), entry,
                                                 request.app.state.token is not None))


async def metrics(request: Request) -> Response:
    entry = entry_of(request)
    raw = request.query_params.get("names")
    names = [n for n in raw.split(",") if n] if raw else None
    body = await run_in_threadpool(metrics_body, catalog_of(request), request.app.state.charts, entry, names,
                                   points_of(request), float_param(request, "xmin"), float_param(request, "xmax"),
                                   axis_of(request))
    return Response(body, media_type="application/json", headers=SECURITY_HEADERS)


async def metrics_csv(request: Request) -> Response:
    """train.jsonl as `runforge csv` writes it (one row per step; ?names=a,b for those columns only)."""
    entry = entry_of(request)
    path = entry.metrics_file()
    if path is None:
        return error(404, f"run {entry.key!r} has no {METRICS_FILE}")
    raw = request.query_params.get("names")
    fields = [n for n in raw.split(",") if n] if raw else None
    try:
        text = await run_in_threadpool(lambda: analysis.to_csv(analysis.table_rows(path, "metrics"), fields, "names"))
    except BadInputError as exc:
        return error(400, str(exc))
    name = re.sub(r"[^A-Za-z0-9._-]", "_", entry.key) + "_metrics.csv"  # a run key may hold anything
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})


async def events(request: Request) -> Response:
    entry = entry_of(request)
    try:
        tail = max(1, min(2000, int(request.query_params.get("tail", 200))))
    except ValueError:
        tail = 200
    lines = await run_in_threadpool(tail_lines, entry.path(EVENTS_FILE), tail)
    return json_response({"lines": lines})


async def run_file(request: Request) -> Response:
    entry = entry_of(request)
    try:
        path = catalog_of(request).file(entry, request.path_params["path"])
    except Refused:
        return error(403, "refused: files are served only from inside the run")
    except FileNotFoundError:
        return error(404, "no such file in the run")
    headers = dict(SECURITY_HEADERS)
    if request.query_params.get("download"):
        return FileResponse(path, headers=headers, filename=path.name)
    media = MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return FileResponse(path, media_type=media, headers=headers)


async def snapshot(request: Request) -> Response:
    entry = entry_of(request)
    try:
        step = int(request.path_params["step"])
    except ValueError:
        return error(400, "step must be an integer")
    for found, path in await run_in_threadpool(entry.snapshots):
        if found == step:
            try:
                return json_response({"step": step, "file": entry.relative(path),
                                      "data": await run_in_threadpool(load_snapshot, path)})
            except RunforgeError as exc:
                return error(422, str(exc))
    return error(404, f"no snapshot at step {step}")


async def control_command(request: Request) -> Response:
    # The body is read only once the request is known to come from the page (JSON header,
    # our origin, the token), and the run is looked up only for a well-formed body.
    command = request.path_params["command"]
    if command not in control.COMMANDS:
        return error(400, f"unknown command {command!r}; choose from {', '.join(control.COMMANDS)}")
    refused = refuse_foreign(request, "control")
    if refused is not None:
        return refused
    await check_control_body(request, command)
    catalog = catalog_of(request)
    entry = entry_of(request)
    info = catalog.info(entry)
    status = (catalog.status(entry) or {})
    row = catalog.row(entry)
    if row is None or row["status"] != "running":
        return error(409, f"run {info.get('name')} is {row['status'] if row else 'unknown'}, not running")
    if entry.path(CONTROL_DIR) is None:
        return error(403, f"refused: {CONTROL_DIR}/ of run {info.get('name')} links out of the run")
    try:
        path = control.send(entry.dir, command)
    except OSError as exc:
        return error(409, f"cannot write to {CONTROL_DIR}/ of run {info.get('name')} "
                          f"({exc.strerror or exc})")
    return json_response({"sent": command, "file": path.name, "step": status.get("step_current")})


async def annotations(request: Request) -> Response:
    """GET: the run's tags and note. POST `{"tags": [...], "note": "..."}`: replace them, with the
    checks of a control request; a bad body writes nothing."""
    if request.method == "GET":
        entry = entry_of(request)
        inside = entry.path(ANNOTATIONS_FILE) is not None
        return json_response(await run_in_threadpool(annotations_of, entry.dir if inside else None))
    refused = refuse_foreign(request, "annotations")
    if refused is not None:
        return refused
    try:
        checked = check_annotations(await json_body(request, MAX_ANNOTATIONS_BODY, "an annotations body"))
    except BadInputError as exc:
        return error(400, str(exc))
    entry = entry_of(request)
    if entry.path(ANNOTATIONS_FILE) is None:
        return error(403, f"refused: {ANNOTATIONS_FILE} of run {entry.key} links out of the run")
    try:
        await run_in_threadpool(write_annotations, os.path.realpath(entry.dir), checked["tags"], checked["note"])
    except OSError as exc:
        return error(409, f"cannot write {ANNOTATIONS_FILE} of run {entry.key} ({exc.strerror or exc})")
    return json_response(checked)


async def compare(request: Request) -> Response:
    catalog = catalog_of(request)
    entries = entries_of(request)
    keys = [entry.key for entry in entries]
    metric = request.query_params.get("metric")
    if metric:
        points, axis = points_of(request), axis_of(request)

        def overlay() -> dict[str, Any]:
            series = {}
            for entry in entries:
                series[entry.key] = catalog.store(entry).chart(metric, points, axis=axis,
                                                               starts=wall_starts(catalog, entry, axis))
            return {"metric": metric, "series": series, "x": axis}

        return json_response(await run_in_threadpool(overlay))
    step_raw = request.query_params.get("step")
    try:
        step = int(step_raw) if step_raw else None
    except ValueError:
        return error(400, "step must be an integer")

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
        return json_response(await run_in_threadpool(table))
    except RunforgeError as exc:
        return error(404, str(exc))


async def system_series(request: Request) -> Response:
    entry = entry_of(request)
    path = entry.path(SYSTEM_FILE)
    samples = await run_in_threadpool(read_system, path) if path is not None and path.is_file() else []
    return json_response(system_columns(samples, points_of(request)))


def system_columns(samples: list[dict[str, Any]], points: int) -> dict[str, Any]:
    """system.jsonl as columns: `step`, `time` (seconds of training), `wall` and one list per figure
    (null where a sample lacks it); every n-th sample and the last when there are more than `points`."""
    kept = samples[::max(1, math.ceil(len(samples) / points))]
    if samples and kept[-1] is not samples[-1]:
        kept.append(samples[-1])
    axes = ("step", "time", "wall")
    names = sorted({name for sample in kept for name, value in sample.items()
                    if name not in axes and isinstance(value, (int, float)) and not isinstance(value, bool)})
    return {"samples": len(samples), **{axis: [sample.get(axis) for sample in kept] for axis in axes},
            "series": {name: [sample.get(name) for sample in kept] for name in names}}


async def hparams(request: Request) -> Response:
    """Per run its flattened config, the last value of each metric and its headline metric (the runs
    table row's), for the parallel-coordinates page."""
    catalog = catalog_of(request)
    entries = entries_of(request)

    def table() -> dict[str, Any]:
        runs = []
        for entry in entries:
            row = catalog.row(entry) or {}
            runs.append({"key": entry.key, "name": row.get("name", entry.key), "trainer": row.get("trainer"),
                         "status": row.get("status"), "config": row.get("config") or {},
                         "metrics": row.get("metrics") or {}, "headline": row.get("headline")})
        return {"runs": runs}

    return json_response(await run_in_threadpool(table))
