"""The dashboard: a Starlette app that reads runs from disk and steers them through control/.

    GET  /  /run/{key}  /compare          the page (one HTML file; the script draws each view)
    GET  /hparams?runs=a,b                the page's parallel-coordinates view of the runs' config and metrics
    GET  /static/{name}                   the page scripts, style.css, plotly.min.js (from the installed plotly)
    GET  /api/runs                        the runs table
    GET  /api/run/{key}                   run.json, config, status, snapshot and image lists
    GET  /api/run/{key}/metrics           downsampled series (?names=a,b&points=N&x=step|time|wall&xmin=&xmax=)
    GET  /api/run/{key}/metrics.csv       train.jsonl as `runforge csv` writes it (?names=a,b)
    GET  /api/run/{key}/events            the last lines of events.log
    GET  /api/run/{key}/system            system.jsonl as columns (CPU %, RSS, RAM %, GPU memory/util; ?points=N)
    GET  /api/run/{key}/snapshot/{step}   one snapshot's content
    GET  /api/run/{key}/file/{path}       a file of the run (?download=1 for an attachment)
    POST /api/run/{key}/control/{cmd}     pause, resume, validate, save, stop
    GET  /api/run/{key}/annotations       the run's tags and note; POST {"tags": [...], "note": "..."} replaces them
    POST /api/run/{key}/view              starts (or finds) `runforge view` of a voxel or splat run: {"url": ...}
    GET  /api/compare                     ?runs=a,b&metric=loss[&x=time] (overlay) or &step=N (snapshot table)
    GET  /api/hparams                     ?runs=a,b: each run's flattened config, last metrics, headline metric

Reads are open on the address the server binds, and reach only files whose real
path lies inside a run under the roots (`catalog.confined`). Control (and writing
annotations, and starting a 3D viewer) needs the JSON header the page sends (a cross-site form
cannot), a small JSON object as body, an Origin (when sent) equal to this server's scheme, host
and port, and the token when one is set (always when bound to a non-loopback address).

The handlers are in routes.py (the 3D viewers' in viewers.py), the memory of chart answers in
cache.py; this module builds the app's state and its route table.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.routing import Route

from ..errors import BadInputError
from . import routes, viewers
from .cache import ChartCache
from .catalog import Catalog
from .routes import MAX_CONTROL_BODY, STATIC_DIR, TOKEN_HEADER, error

__all__ = ["HostGuard", "MAX_CONTROL_BODY", "TOKEN_HEADER", "create_app"]


def _plotly_js() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise BadInputError(None, "the plotly package is not installed (pip install plotly): "
                                  "the charts need its plotly.min.js")
    return Path(spec.origin).parent / "package_data" / "plotly.min.js"


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    if app.state.warm_runs:
        threading.Thread(target=app.state.catalog.warm, args=(app.state.warm_runs,), name="runforge-warm",
                         daemon=True).start()
    try:
        yield
    finally:
        app.state.viewers.stop_all()  # no viewer outlives the dashboard


def create_app(roots: Sequence[str | os.PathLike[str]], *, token: str | None = None,
               allowed_hosts: Sequence[str] | None = None, warm_runs: int = 20) -> Starlette:
    """The dashboard over `roots`. `token`: required for control when set. `allowed_hosts`: the
    Host header values accepted (against DNS rebinding); None accepts any. `warm_runs`: how many
    of the newest runs have their metrics read in the background at start."""
    catalog = Catalog(roots)
    table = [
        Route("/", routes.page),
        Route("/run/{key}", routes.page),
        Route("/compare", routes.page),
        Route("/hparams", routes.hparams_page),
        Route("/static/{name}", routes.static),
        Route("/api/runs", routes.runs),
        Route("/api/run/{key}", routes.run_api),
        Route("/api/run/{key}/metrics", routes.metrics),
        Route("/api/run/{key}/metrics.csv", routes.metrics_csv),
        Route("/api/run/{key}/events", routes.events),
        Route("/api/run/{key}/system", routes.system_series),
        Route("/api/run/{key}/snapshot/{step}", routes.snapshot),
        Route("/api/run/{key}/file/{path:path}", routes.run_file),
        Route("/api/run/{key}/control/{command}", routes.control_command, methods=["POST"]),
        Route("/api/run/{key}/annotations", routes.annotations, methods=["GET", "POST"]),
        Route("/api/run/{key}/view", viewers.view_run, methods=["POST"]),
        Route("/api/compare", routes.compare),
        Route("/api/hparams", routes.hparams),
    ]
    app = Starlette(routes=table, lifespan=_lifespan, exception_handlers=routes.EXCEPTION_HANDLERS)
    # What the handlers read (routes.py lists it), and how many runs to warm at start.
    app.state.catalog = catalog
    app.state.warm_runs = warm_runs
    app.state.charts = ChartCache()
    app.state.viewers = viewers.Viewers()
    app.state.token = token
    app.state.plotly_js = _plotly_js()
    app.state.index_html = (STATIC_DIR / "index.html").read_bytes()
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
                await error(400, f"refused: unexpected Host header {host!r}")(scope, receive, send)
                return
        await self.app(scope, receive, send)
