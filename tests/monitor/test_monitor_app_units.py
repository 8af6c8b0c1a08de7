"""The dashboard's parts on their own: the chart cache, the helpers, and single handlers in a bare app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from runforge.monitor import routes
from runforge.monitor.cache import ChartCache
from runforge.monitor.catalog import Catalog
from monitor_helpers import edit_info, make_run, running_info

JSON = {"Content-Type": "application/json"}


def bare_app(catalog: Catalog, *table: Route, token: str | None = None) -> Starlette:
    """Only the given routes, and only the state those handlers read."""
    app = Starlette(routes=list(table), exception_handlers=routes.EXCEPTION_HANDLERS)
    app.state.catalog = catalog
    app.state.charts = ChartCache()
    app.state.token = token
    return app


# ----------------------------------------------------------------------------- ChartCache


def test_chart_cache_answers_only_for_the_version_it_was_built_from(tmp_path):
    cache = ChartCache()
    key = (tmp_path, ("loss",), 100, None, None)
    assert cache.get(key, (1, 10)) is None
    cache.put(key, (1, 10), b"old")
    assert cache.get(key, (1, 10)) == b"old"
    assert cache.get(key, (1, 20)) is None  # the log grew
    assert cache.get((tmp_path, None, 100, None, None), (1, 10)) is None  # another request
    cache.put(key, (1, 20), b"new")
    assert cache.get(key, (1, 20)) == b"new"
    assert cache.get(key, (1, 10)) is None
    assert len(cache) == 1


def test_chart_cache_drops_everything_when_full(tmp_path):
    cache = ChartCache(limit=3)
    keys = [(tmp_path, None, points, None, None) for points in (10, 20, 30, 40)]
    for key in keys[:3]:
        cache.put(key, 0, b"x")
    assert len(cache) == 3
    cache.put(keys[3], 0, b"y")
    assert len(cache) == 1
    assert cache.get(keys[0], 0) is None
    assert cache.get(keys[3], 0) == b"y"


def test_metrics_body_is_reused_until_train_jsonl_grows(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=5)
    catalog = Catalog([tmp_path / "runs"])
    entry = catalog.get("r")
    charts = ChartCache()

    first = routes.metrics_body(catalog, charts, entry, None, 100, None, None)
    again = routes.metrics_body(catalog, charts, entry, None, 100, None, None)
    assert again is first  # served from the cache, not encoded again
    assert json.loads(first)["last_step"] == 5

    with open(run_dir / "train.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 6, "loss": 0.125}) + "\n")
    grown = routes.metrics_body(catalog, charts, entry, None, 100, None, None)
    assert grown is not first
    data = json.loads(grown)
    assert data["last_step"] == 6 and data["lines"] == 6
    assert data["series"]["loss"]["x"][-1] == 6 and data["series"]["loss"]["y"][-1] == 0.125


def test_metrics_body_keeps_only_known_names_in_the_asked_order(tmp_path):
    make_run(tmp_path / "runs", "r", steps=5)
    catalog = Catalog([tmp_path / "runs"])
    body = routes.metrics_body(catalog, ChartCache(), catalog.get("r"), ["losses.l1", "nope", "loss"], 100,
                               None, None)
    data = json.loads(body)
    assert list(data["series"]) == ["losses.l1", "loss"]
    assert set(data["names"]) >= {"loss", "losses.l1"}


# ----------------------------------------------------------------------------- helpers


def test_tail_lines_reads_the_end_and_drops_a_cut_first_line(tmp_path):
    path = tmp_path / "events.log"
    short = [f"{i:04d} event" for i in range(100)]
    path.write_text("\n".join(short) + "\n", encoding="utf-8")
    assert routes.tail_lines(path, 2) == short[-2:]
    assert routes.tail_lines(path, 1000) == short
    # Lines longer than the 256 bytes a line is given: fewer come back, but never a cut one.
    long = [f"{i:04d} " + "x" * 300 for i in range(100)]
    path.write_text("\n".join(long) + "\n", encoding="utf-8")
    assert routes.tail_lines(path, 2) == long[-1:]
    assert routes.tail_lines(tmp_path / "missing.log", 5) == []
    assert routes.tail_lines(tmp_path, 5) == []  # a folder
    assert routes.tail_lines(None, 5) == []  # refused: links out of the run


def test_run_detail_sorts_images_by_step_past_four_digits(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=3)
    (run_dir / "images").mkdir()
    for name in ("step_10000_view.png", "step_9999_view.png", "step_0002_view.png", "notastep_view.png"):
        (run_dir / "images" / name).write_bytes(b"\x89PNG")
    catalog = Catalog([tmp_path / "runs"])
    detail = routes.run_detail(catalog, catalog.get("r"), token_set=True)
    assert [shot["step"] for shot in detail["images"]["view"]] == [2, 9999, 10000]
    assert detail["images"]["view"][0]["file"] == "images/step_0002_view.png"
    assert detail["config"] == {"steps": 3}
    assert detail["control_needs_token"] is True


# ----------------------------------------------------------------------------- one handler at a time


def test_events_handler_alone(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=3)
    (run_dir / "events.log").write_text("".join(f"line {i}\n" for i in range(10)), encoding="utf-8")
    app = bare_app(Catalog([tmp_path / "runs"]), Route("/api/run/{key}/events", routes.events))
    with TestClient(app) as client:
        answer = client.get("/api/run/r/events", params={"tail": "3"})
        assert answer.status_code == 200
        assert answer.json() == {"lines": ["line 7", "line 8", "line 9"]}
        assert answer.headers["x-frame-options"] == "DENY"
        assert client.get("/api/run/r/events", params={"tail": "x"}).json()["lines"][0] == "line 0"
        missing = client.get("/api/run/nope/events")
        assert missing.status_code == 404  # entry_of's Reject, answered by EXCEPTION_HANDLERS
        assert "no run 'nope'" in missing.json()["error"]


def test_control_handler_alone_checks_the_token_before_writing(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=3)
    edit_info(run_dir, **running_info())
    app = bare_app(Catalog([tmp_path / "runs"]),
                   Route("/api/run/{key}/control/{command}", routes.control_command, methods=["POST"]),
                   token="s3cret")
    sent = lambda: sorted(p.name for p in (run_dir / "control").glob("*.cmd"))  # noqa: E731
    with TestClient(app) as client:
        for headers in (JSON, {**JSON, routes.TOKEN_HEADER: "wrong"}):
            refused = client.post("/api/run/r/control/pause", content=b"{}", headers=headers)
            assert refused.status_code == 403 and "token" in refused.json()["error"]
        assert sent() == []
        ok = client.post("/api/run/r/control/pause", content=b"{}",
                         headers={**JSON, routes.TOKEN_HEADER: "s3cret"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["sent"] == "pause"
        assert len(sent()) == 1 and sent()[0].endswith("pause.cmd")


@pytest.mark.parametrize("origin, same", [
    ("http://testserver", True),
    ("http://TESTSERVER:80", True),
    ("https://testserver", False),
    ("http://testserver:81", False),
    ("http://testserver/", False),
    ("null", False),
])
def test_same_origin_compares_scheme_host_and_port(tmp_path, origin, same):
    async def probe(request):
        return routes.json_response({"same": routes.same_origin(request, request.headers["origin"])})

    with TestClient(Starlette(routes=[Route("/", probe)])) as client:
        assert client.get("/", headers={"Origin": origin}).json() == {"same": same}


def test_json_response_turns_non_finite_numbers_into_null():
    answer = routes.json_response({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": -float("inf")}})
    body = json.loads(answer.body)
    assert body == {"a": None, "b": [1.5, None], "c": {"d": None}}


def test_create_app_state_is_what_the_handlers_read(tmp_path):
    from runforge.monitor.app import create_app

    make_run(tmp_path / "runs", "r", steps=3)
    app = create_app([tmp_path / "runs"], token="t", warm_runs=0)
    assert isinstance(app.state.catalog, Catalog)
    assert isinstance(app.state.charts, ChartCache)
    assert app.state.token == "t"
    assert Path(app.state.plotly_js).name == "plotly.min.js"
    assert b"<html" in app.state.index_html.lower()
