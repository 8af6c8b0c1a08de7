"""The dashboard's HTTP API on a real uvicorn server: runs table, series, files, and what it refuses."""

from __future__ import annotations

import json
import os

import pytest

import runforge
from monitor_helpers import Server, make_run

SECRET = b"top secret, outside the root"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("served")
    (base / "secret.txt").write_bytes(SECRET)
    root = base / "runs"
    old = make_run(root, "old-run", steps=10, snapshots={10: {"best_quality_ever": 0.25}})
    new = make_run(root, "new-run", name="<b>bold</b>", steps=50,
                   loss=lambda step: 100.0 if step == 37 else 1.0 / step)
    for run_dir, created in ((old, "2026-01-01T00:00:00Z"), (new, "2026-02-01T00:00:00Z")):
        info = json.loads((run_dir / "run.json").read_text())
        info["created_at"] = created
        (run_dir / "run.json").write_text(json.dumps(info))
    (new / "images").mkdir(exist_ok=True)
    (new / "images" / "step_0001_link.png").symlink_to(base / "secret.txt")
    with runforge.Run(out=root / "samples-run", images_dir="samples", tensorboard=False, progress=False,
                      handle_signals=False) as run:  # kolmogorov's layout: images in samples/
        run.image(4, "samples", [[[0, 0, 255]] * 4] * 3)
    info = json.loads((run.dir / "run.json").read_text())
    (run.dir / "run.json").write_text(json.dumps({**info, "created_at": "2025-01-01T00:00:00Z"}))
    (root / "linked-run").symlink_to(old)  # a second name for a run inside the root: still served
    (root / "outside-link").symlink_to(make_run(base, "elsewhere", steps=3))
    server = Server(str(root))
    yield server, base, root
    server.stop()


def test_runs_table_lists_runs_newest_first_with_their_columns(served):
    server, _, _ = served
    runs = server.get_json("/api/runs")["runs"]
    assert [r["key"] for r in runs][:1] == ["new-run"] and "outside-link" not in {r["key"] for r in runs}
    by_key = {r["key"]: r for r in runs}
    assert by_key["new-run"]["name"] == "<b>bold</b>"  # JSON carries the text as is; the page shows it as text
    old = by_key["old-run"]
    assert (old["trainer"], old["status"], old["step"], old["step_max"]) == ("unit", "finished", 10, 10)
    assert (old["best_name"], old["best"]) == ("best_quality_ever", 0.25)


def test_images_are_listed_and_served_from_the_runs_images_dir(served):
    server, _, root = served
    images = server.get_json("/api/run/samples-run")["images"]
    assert images == {"samples": [{"step": 4, "file": "samples/step_0004_samples.png"}]}
    status, body, _ = server.request("GET", "/api/run/samples-run/file/samples/step_0004_samples.png")
    assert status == 200 and body == (root / "samples-run" / "samples" / "step_0004_samples.png").read_bytes()


def test_series_are_downsampled_on_the_server_and_keep_spikes(served):
    server, _, _ = served
    data = server.get_json("/api/run/new-run/metrics?points=10")
    assert data["names"] == ["loss", "losses.l1"]
    loss = data["series"]["loss"]
    assert loss["points"] == 50 and len(loss["x"]) <= 12
    assert 100.0 in loss["y"] and loss["x"][loss["y"].index(100.0)] == 37
    assert loss["x"][0] == 1 and loss["x"][-1] == 50
    zoomed = server.get_json("/api/run/new-run/metrics?points=10&names=loss&xmin=40&xmax=44")
    assert zoomed["series"]["loss"]["x"] == [40, 41, 42, 43, 44] and list(zoomed["series"]) == ["loss"]


def test_snapshot_view_and_download(served):
    server, _, root = served
    shown = server.get_json("/api/run/old-run/snapshot/10")
    assert shown["file"] == "stats/stats_10.json" and shown["data"]["best_quality_ever"] == 0.25
    status, body, headers = server.request("GET", "/api/run/old-run/file/stats/stats_10.json?download=1")
    assert status == 200 and body == (root / "old-run" / "stats" / "stats_10.json").read_bytes()
    assert headers["content-disposition"].startswith("attachment") and "stats_10.json" in headers["content-disposition"]
    assert server.request("GET", "/api/run/old-run/snapshot/11")[0] == 404


@pytest.mark.parametrize("path, expected", [
    ("/api/run/new-run/file/../../secret.txt", 403),
    ("/api/run/new-run/file/..%2f..%2fsecret.txt", 403),
    ("/api/run/new-run/file/%2e%2e/%2e%2e/secret.txt", 403),
    ("/api/run/new-run/file/%252e%252e/%252e%252e/secret.txt", 403),
    ("/api/run/new-run/file/..%5c..%5csecret.txt", 403),
    ("/api/run/new-run/file//etc/passwd", 403),
    ("/api/run/new-run/file/%2fetc%2fpasswd", 403),
    ("/api/run/new-run/file/images/step_0001_link.png", 403),  # a symlink out of the root
    ("/api/run/..%2f..%2fsecret.txt/file/x", 404),
    ("/api/run/%2e%2e/file/secret.txt", 404),
    ("/api/run/outside-link/file/config.json", 404),  # a linked run outside the root is not served
    ("/static/..%2f..%2fcli.py", 404),
    ("/static/../../../secret.txt", 404),
])
def test_paths_that_leave_the_root_are_refused(served, path, expected):
    server, _, _ = served
    status, body, _ = server.request("GET", path)
    assert status == expected, (path, status, body[:200])
    assert SECRET not in body and b"root:" not in body and b"elsewhere" not in body


def test_a_file_inside_the_run_is_served(served):
    server, _, root = served
    status, body, _ = server.request("GET", "/api/run/new-run/file/config.json")
    assert status == 200 and json.loads(body) == {"steps": 50}
    status, body, _ = server.request("GET", "/api/run/linked-run/file/config.json")
    assert status == 200 and json.loads(body) == {"steps": 10}


def test_pages_carry_no_run_text_and_forbid_inline_scripts(served):
    server, _, _ = served
    status, body, headers = server.request("GET", "/run/new-run")
    assert status == 200 and b"<b>bold</b>" not in body
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    status, body, headers = server.request("GET", "/static/plotly.min.js")
    assert status == 200 and len(body) > 1_000_000 and headers["content-type"].startswith("text/javascript")


def test_requests_for_another_host_are_refused_on_loopback(served):
    server, _, _ = served
    status, _, _ = server.request("GET", "/api/runs", {"Host": f"evil.example:{server.port}"})
    assert status == 400


def test_control_refuses_forms_cross_site_and_finished_runs(served):
    server, _, root = served
    status, _, _ = server.request("POST", "/api/run/old-run/control/stop",
                                  {"Content-Type": "application/x-www-form-urlencoded"}, b"")
    assert status == 415
    status, _, _ = server.request("POST", "/api/run/old-run/control/stop",
                                  {"Content-Type": "application/json", "Origin": "http://evil.example"}, b"{}")
    assert status == 403
    status, body = server.control("old-run", "stop")
    assert status == 409 and "finished" in body["error"]
    assert server.control("old-run", "explode")[0] == 400
    assert not list((root / "old-run" / "control").glob("*.cmd"))


def test_control_needs_the_token_when_bound_beyond_loopback(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=5)
    info = json.loads((run_dir / "run.json").read_text())
    info["status"] = "running"  # this process stands in for the trainer: its pid is alive
    info["pid"], info["pid_start"] = os.getpid(), None
    (run_dir / "run.json").write_text(json.dumps(info))
    server = Server(str(tmp_path / "runs"), "--host", "0.0.0.0")
    try:
        assert server.token and len(server.token) >= 20
        assert server.control("r", "pause")[0] == 403
        assert server.control("r", "pause", token="wrong" + server.token)[0] == 403
        assert not list((run_dir / "control").glob("*.cmd"))
        status, body = server.control("r", "pause", token=server.token)
        assert status == 200 and body["sent"] == "pause"
        assert [p.name.split("-")[-1] for p in (run_dir / "control").glob("*.cmd")] == ["pause.cmd"]
    finally:
        server.stop()


def test_a_snapshot_folder_outside_the_run_is_read_by_the_cli_but_not_served(tmp_path, capsys):
    from runforge.cli import main

    run_dir = make_run(tmp_path / "runs", "sr", steps=5)
    learn = tmp_path / "Learn"  # an sr learn directory, outside the run and its root
    learn.mkdir()
    (learn / "Statistik_5.json").write_text(json.dumps({"step_current": 5, "quality_ki_value": 0.5}))
    info = json.loads((run_dir / "run.json").read_text())
    info.update(snapshot_dir=str(learn), snapshot_pattern="Statistik_{step}.json")
    (run_dir / "run.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["show", str(run_dir), "--step", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["snapshot"]["quality_ki_value"] == 0.5
    server = Server(str(tmp_path / "runs"))
    try:
        assert server.get_json("/api/run/sr")["snapshots"] == []
        assert server.request("GET", "/api/run/sr/snapshot/5")[0] == 404
        status, body, _ = server.request("GET", "/api/compare?runs=sr,sr&step=5")
        assert status == 404 and b"0.5" not in body
    finally:
        server.stop()


def test_charts_follow_a_growing_log(tmp_path):
    run_dir = make_run(tmp_path / "runs", "growing", steps=5)
    server = Server(str(tmp_path / "runs"))
    try:
        assert server.get_json("/api/run/growing/metrics")["series"]["loss"]["x"] == [1, 2, 3, 4, 5]
        assert server.get_json("/api/run/growing/metrics")["lines"] == 5  # answered again, unchanged
        with open(run_dir / "train.jsonl", "a") as f:
            f.write(json.dumps({"step": 6, "time": 1.0, "loss": 0.5, "acc": 0.9}) + "\n")
        grown = server.get_json("/api/run/growing/metrics")
        assert grown["series"]["loss"]["x"][-1] == 6 and grown["series"]["acc"]["y"] == [0.9]
        assert grown["names"] == ["acc", "loss", "losses.l1"] and grown["last_step"] == 6
    finally:
        server.stop()


def test_snapshots_are_grouped_as_their_run_json_declares(tmp_path):
    from runforge.run.snapshot_fields import SNAPSHOT_GROUPS

    root = tmp_path / "runs"
    with runforge.Run(trainer="splat", out=root / "declared", tensorboard=False, progress=False, handle_signals=False,
                      snapshot_groups={"validation": ("psnr", "ssim")}) as run:
        run.snapshot(7, {"psnr": 24.5, "ssim": 0.8})
    old = make_run(root, "old", steps=3, snapshots={3: {"total_loss_value": 0.5}})
    info = json.loads((old / "run.json").read_text())
    del info["snapshot_groups"]  # written before runs declared their snapshot fields
    (old / "run.json").write_text(json.dumps(info))
    server = Server(str(root))
    try:
        declared = server.get_json("/api/run/declared")
        assert declared["snapshot_groups"] == {"run": ["step_current", "last_update_time"],
                                               "validation": ["psnr", "ssim"]}
        data = server.get_json("/api/run/declared/snapshot/7")["data"]
        assert set(data) == {"step_current", "last_update_time", "psnr", "ssim"}
        assert not [key for key in data if key.startswith("adaptive_")]
        generic = {name: list(fields) for name, fields in SNAPSHOT_GROUPS.items()}
        assert server.get_json("/api/run/old")["snapshot_groups"] == generic
        assert server.get_json("/api/run/old/snapshot/3")["data"]["total_loss_value"] == 0.5
    finally:
        server.stop()


def test_a_finished_runs_row_follows_new_snapshots_in_the_folder_its_run_json_names(tmp_path):
    from runforge.monitor.catalog import Catalog

    with runforge.Run(trainer="sr", out=tmp_path / "runs" / "sr", tensorboard=False, progress=False,
                      handle_signals=False, snapshot_dir="Learn", snapshot_pattern="Statistik_{step}.json") as run:
        run.snapshot(4, {"best_quality_ever": 0.5})
    catalog = Catalog([tmp_path / "runs"])
    [entry] = catalog.entries()
    assert (catalog.row(entry)["last_snapshot_step"], catalog.row(entry)["best"]) == (4, 0.5)
    (run.dir / "Learn" / "Statistik_8.json").write_text(json.dumps({"best_quality_ever": 0.75}))
    os.utime(run.dir / "Learn", ns=(1, 1))  # the folder's mtime changes, whatever the clock's resolution
    assert (catalog.row(entry)["last_snapshot_step"], catalog.row(entry)["best"]) == (8, 0.75)


def test_series_name_the_damaged_lines_they_leave_out(tmp_path):
    run_dir = make_run(tmp_path / "runs", "damaged", steps=3)
    with open(run_dir / "train.jsonl", "ab") as f:
        f.write(b'{"step": 4, "lo\n' + json.dumps({"step": 5, "loss": 0.2}).encode() + b"\n")
    make_run(tmp_path / "runs", "sound", steps=3)
    server = Server(str(tmp_path / "runs"))
    try:
        damaged = server.get_json("/api/run/damaged/metrics")
        assert damaged["series"]["loss"]["x"] == [1, 2, 3, 5]
        assert damaged["warnings"] == ["train.jsonl: line 4 is not valid JSON; skipped it"]
        assert server.get_json("/api/run/sound/metrics")["warnings"] == []
    finally:
        server.stop()
