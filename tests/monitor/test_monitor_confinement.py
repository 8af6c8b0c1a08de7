"""Every dashboard route keeps to the files inside a run: links out, absolute or escaping folders in
run.json, and runs linked in from elsewhere are treated as absent, never served and never a 500."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from starlette.testclient import TestClient

from runforge.monitor.app import create_app
from monitor_helpers import edit_info, make_run, running_info

MARKER = "MARKER-7f3a9c-outside-the-root"
INDEX_METRIC = 4242.125  # the best metric of a checkpoint index outside the root


def _outside(base):
    """Files and folders beside the root that a run links to, each carrying the marker."""
    out = base / "outside"
    out.mkdir()
    (out / "secret.txt").write_text(f"2026-01-01T00:00:00Z INFO {MARKER}\n")
    (out / "secret.json").write_text(json.dumps({
        "name": MARKER, "trainer": MARKER, "status": "finished", "steps": MARKER, "step_current": 5,
        "best_quality_ever": 0.5, "quality_ki_value": MARKER, "last_update_time": 0}))
    (out / "secret.jsonl").write_text(json.dumps({"step": 1, "time": 0.0, MARKER: 1.0, "loss": 7.0}) + "\n")
    (out / "index.json").write_text(json.dumps({"checkpoints": [{"step": 5, "metric": INDEX_METRIC,
                                                                  "file": MARKER}]}))
    (out / "images").mkdir()
    (out / "images" / f"step_0001_{MARKER}.png").write_text(MARKER)
    (out / "stats").mkdir()
    (out / "stats" / "stats_5.json").write_text(json.dumps({"step_current": 5, "quality_ki_value": MARKER}))
    (out / "control").mkdir()
    return out


def _link(path, target):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.symlink_to(target)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A root with one good run and one run per way of reaching outside it."""
    base = tmp_path_factory.mktemp("confine")
    out = _outside(base)
    root = base / "runs"
    snaps = {10: {"best_quality_ever": 0.25}}
    make_run(root, "good", steps=10, snapshots=snaps)

    links = {  # run -> (file inside the run, what it links to)
        "events-link": ("events.log", out / "secret.txt"),
        "config-link": ("config.json", out / "secret.json"),
        "runjson-link": ("run.json", out / "secret.json"),
        "status-link": ("status.json", out / "secret.json"),
        "snapshot-link": ("stats/stats_5.json", out / "secret.json"),
        "metrics-link": ("train.jsonl", out / "secret.jsonl"),
        "index-link": ("ckpts/index_rank0.json", out / "index.json"),
        "annotations-link": ("annotations.json", out / "secret.json"),
        "system-link": ("system.jsonl", out / "secret.jsonl"),
        "renders-folder-link": ("renders", out / "images"),
        "image-link": ("images/step_0001_x.png", out / "secret.txt"),
        "stats-folder-link": ("stats", out / "stats"),
        "images-folder-link": ("images", out / "images"),
    }
    for name, (relative, target) in links.items():
        run_dir = make_run(root, name, steps=10, snapshots=snaps)
        _link(run_dir / relative, target)
    folders = {  # run -> run.json fields naming a folder outside
        "images-abs": {"images_dir": str(out / "images")},
        "images-escape": {"images_dir": "../../outside/images"},
        "snapdir-abs": {"snapshot_dir": str(out / "stats"), "snapshot_pattern": "stats_{step}.json"},
        "snapdir-escape": {"snapshot_dir": "../../outside/stats", "snapshot_pattern": "stats_{step}.json"},
    }
    for name, fields in folders.items():
        edit_info(make_run(root, name, steps=10, snapshots=snaps), **fields)
    # a running run whose control/ links out: a command must not be written there
    control_run = make_run(root, "control-link", steps=10)
    edit_info(control_run, **running_info())
    _link(control_run / "control", out / "control")
    # a run directory linked in from outside the root
    elsewhere = make_run(base, "elsewhere", steps=10, snapshots=snaps)
    edit_info(elsewhere, name=MARKER)
    (root / "outside-run").symlink_to(elsewhere)

    app = create_app([root], warm_runs=0)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app, root, out, sorted(list(links) + list(folders) + ["control-link", "outside-run"])


def _requests(key):
    """(method, url) for every route of the app, about run `key` (the good run alongside where two are needed)."""
    files = ["config.json", "run.json", "status.json", "events.log", "train.jsonl", "stats/stats_5.json",
             "stats/stats_10.json", "ckpts/index_rank0.json", "images/step_0001_x.png",
             f"images/step_0001_{MARKER}.png", "samples/x.png"]
    return {
        "/": [("GET", "/")],
        "/run/{key}": [("GET", f"/run/{key}")],
        "/compare": [("GET", f"/compare?runs={key},good")],
        "/hparams": [("GET", f"/hparams?runs={key},good")],
        "/api/hparams": [("GET", f"/api/hparams?runs={key},good")],
        "/api/run/{key}/system": [("GET", f"/api/run/{key}/system")],
        "/api/run/{key}/metrics.csv": [("GET", f"/api/run/{key}/metrics.csv"),
                                       ("GET", f"/api/run/{key}/metrics.csv?names=loss")],
        "/static/{name}": [("GET", "/static/core.js")],
        "/api/runs": [("GET", "/api/runs")],
        "/api/run/{key}": [("GET", f"/api/run/{key}")],
        "/api/run/{key}/metrics": [("GET", f"/api/run/{key}/metrics"),
                                   ("GET", f"/api/run/{key}/metrics?names={MARKER},loss")],
        "/api/run/{key}/events": [("GET", f"/api/run/{key}/events?tail=2000")],
        "/api/run/{key}/snapshot/{step}": [("GET", f"/api/run/{key}/snapshot/{s}") for s in (5, 10)],
        "/api/run/{key}/file/{path:path}": [("GET", f"/api/run/{key}/file/{f}") for f in files]
                                           + [("GET", f"/api/run/{key}/file/{f}?download=1") for f in files],
        "/api/run/{key}/control/{command}": [("POST", f"/api/run/{key}/control/pause")],
        "/api/run/{key}/annotations": [("GET", f"/api/run/{key}/annotations"), ("POST", f"/api/run/{key}/annotations")],
        "/api/run/{key}/view": [("POST", f"/api/run/{key}/view")],  # no run here is a voxel or splat run: 404
        "/api/compare": [("GET", f"/api/compare?runs={key},good&metric=loss"),
                         ("GET", f"/api/compare?runs={key},good"), ("GET", f"/api/compare?runs={key},good&step=5"),
                           ("GET", f"/api/compare?runs={key},good&step=10")],
    }


def test_every_route_is_covered(hostile):
    _, app, _, _, _ = hostile
    assert {route.path for route in app.routes} == set(_requests("x"))


def test_no_route_serves_what_lies_outside_and_none_fails(hostile):
    client, _, _, out, keys = hostile
    seen = 0
    for key in keys:
        for requests in _requests(key).values():
            for method, url in requests:
                response = client.request(method, url, headers={"Content-Type": "application/json"},
                                          content=b"{}" if method == "POST" else None)
                assert response.status_code < 500, (url, response.status_code, response.text[:300])
                assert MARKER not in response.text, (url, response.text[:300])
                assert str(INDEX_METRIC) not in response.text, url
                if response.status_code >= 400:
                    assert "error" in response.json(), url
                seen += 1
    assert seen > 500
    assert not list((out / "control").iterdir())  # no command written through the link


def test_links_out_are_absent_while_the_rest_of_the_run_is_shown(hostile):
    client, _, root, _, _ = hostile
    keys = {row["key"] for row in client.get("/api/runs").json()["runs"]}
    assert "good" in keys and "events-link" in keys
    assert not {"runjson-link", "status-link", "outside-run"} & keys  # what `summarize` reads links out
    for key in ("runjson-link", "status-link", "outside-run"):
        assert client.get(f"/api/run/{key}").status_code == 404

    assert client.get("/api/run/events-link/events").json() == {"lines": []}
    assert client.get("/api/run/good/events").json()["lines"]  # a real events.log is shown
    assert client.get("/api/run/config-link").json()["config"] is None
    assert client.get("/api/run/good").json()["config"] == {"steps": 10}
    assert client.get("/api/run/config-link/file/config.json").status_code == 403

    detail = client.get("/api/run/snapshot-link").json()
    assert [s["step"] for s in detail["snapshots"]] == [10]  # the real snapshot, not the link
    assert client.get("/api/run/snapshot-link/snapshot/5").status_code == 404
    assert client.get("/api/run/snapshot-link/snapshot/10").json()["data"]["best_quality_ever"] == 0.25
    assert client.get("/api/run/stats-folder-link").json()["snapshots"] == []

    metrics = client.get("/api/run/metrics-link/metrics").json()
    assert metrics["names"] == [] and metrics["lines"] == 0
    overlay = client.get("/api/compare?runs=metrics-link,good&metric=loss").json()["series"]
    assert overlay["metrics-link"] is None and overlay["good"]["points"] == 10  # not the outside log's loss
    assert client.get("/api/run/good/metrics").json()["names"] == ["loss", "losses.l1"]

    assert client.get("/api/run/system-link/system").json()["samples"] == 0
    assert not client.get("/api/run/renders-folder-link").json()["media"]

    rows = {row["key"]: row for row in client.get("/api/runs").json()["runs"]}
    assert rows["index-link"]["best"] == 0.25  # from its own snapshot; the linked index is not read
    assert client.get("/api/compare?runs=good,snapshot-link&step=5").status_code == 404
    table = client.get("/api/compare?runs=good,snapshot-link").json()
    assert table["step"] == 10 and table["common_steps"] == [10]


@pytest.mark.parametrize("key, listing, field", [
    ("images-abs", "images", "images_dir"),
    ("images-escape", "images", "images_dir"),
    ("images-folder-link", "images", "images_dir"),  # run.json says "images"; that folder links out
    ("snapdir-abs", "snapshots", "snapshot_dir"),
    ("snapdir-escape", "snapshots", "snapshot_dir"),
])
def test_folders_outside_the_run_list_nothing_and_say_why(hostile, key, listing, field):
    client, _, _, _, _ = hostile
    response = client.get(f"/api/run/{key}")
    assert response.status_code == 200
    detail = response.json()
    assert not detail[listing]
    assert len(detail["warnings"]) == 1 and f"run.json {field}" in detail["warnings"][0], detail["warnings"]
    assert client.get("/api/run/good").json()["warnings"] == []


def test_control_through_a_linked_folder_is_refused(hostile):
    client, _, _, out, _ = hostile
    response = client.post("/api/run/control-link/control/pause", headers={"Content-Type": "application/json"},
                           content=b"{}")
    assert response.status_code == 403 and "links out" in response.json()["error"]
    assert not list((out / "control").iterdir())


def test_a_run_that_turns_into_a_link_out_is_no_longer_served(tmp_path):
    root = tmp_path / "runs"
    run_dir = make_run(root, "r", steps=3)
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"name": MARKER, "status": "finished"}))
    with TestClient(create_app([root], warm_runs=0)) as client:
        assert client.get("/api/run/r").status_code == 200  # known to the catalog from here on
        os.replace(run_dir / "run.json", tmp_path / "old.json")
        (run_dir / "run.json").symlink_to(secret)
        response = client.get("/api/run/r")
        assert response.status_code == 404 and MARKER not in response.text


def test_a_root_that_is_itself_a_run_is_served(tmp_path):
    run_dir = make_run(tmp_path, "solo", steps=4, snapshots={4: {"best_quality_ever": 1.0}})
    with TestClient(create_app([run_dir], warm_runs=0)) as client:
        assert [r["key"] for r in client.get("/api/runs").json()["runs"]] == ["solo"]
        detail = client.get("/api/run/solo").json()
        assert detail["snapshots"] == [{"step": 4, "file": "stats/stats_4.json"}]
        assert client.get("/api/run/solo/file/stats/stats_4.json").json()["best_quality_ever"] == 1.0
