"""The charts of the run and compare pages: x axis (step, training time, wall clock), synced crosshair,
sections with the loss first, per-chart log scale, smoothing, constant series, metric search, CSV download."""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

import runforge
from monitor_helpers import (HAS_CHROMIUM, NO_CHROMIUM, Server, browser, css, make_run, severe_logs,  # noqa: F401
                             wait_for)
from runforge.monitor.app import create_app
from runforge.monitor.series import MetricStore, stretch_starts

STEPS = 40
SR_ORDER = ["main", "losses", "val", "adaptive", "weights"]
"""The sections of `sr_like`'s charts as the page shows them: the loss first, then losses, validation, the rest."""


def sr_like(root: Path, dirname: str = "sr") -> Path:
    """A run with sr's keys (adaptive.lr_factor sorts first by name), a constant lr and a negative reward."""
    with runforge.Run(trainer="sr", config={}, out=root / dirname, steps=STEPS, tensorboard=False, progress=False,
                      handle_signals=False) as run:
        for step in range(1, STEPS + 1):
            run.log(step, {"loss": 1.0 / step, "losses": {"l1": 0.5 / step, "perceptual": 0.1}, "lr": 0.02,
                           "grad_norm": 1.0 + step % 3, "reward": -float(step),
                           "weights": {"l1": 1.0}, "adaptive": {"lr_factor": 1.0, "plateau_counter": step % 4}})
            if step % 10 == 0:
                run.log(step, {"val": {"psnr": 20.0 + step / 10, "ssim": 0.5}})
    return root / dirname


def logged_times(run_dir: Path, key: str) -> tuple[list[int], list[float]]:
    """The steps `key` was logged at, and their training time: a step logged in several lines (the loss,
    then the validation) takes the time of the last, less the first line's time."""
    lines = [json.loads(line) for line in (run_dir / "train.jsonl").read_text().splitlines()]
    last_time = {line["step"]: line["time"] for line in lines}
    steps = [line["step"] for line in lines if key in line]
    return steps, [last_time[step] - lines[0]["time"] for step in steps]


def figure(driver, metric: str) -> dict:
    """The data and layout plotly holds for a chart of the run page."""
    return driver.execute_script(
        "const d = document.querySelector(`.chart[data-metric='${arguments[0]}']`);"
        "return d && d.data ? {data: d.data.map(t => ({x: t.x, y: t.y})), layout: d.layout} : null;", metric)


# ----------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    sr_like(root)
    return TestClient(create_app([root], warm_runs=0)), root


def test_metrics_over_training_time_and_wall_clock(client):
    app, root = client
    steps, times = logged_times(root / "sr", "loss")
    by_step = app.get("/api/run/sr/metrics?names=loss&x=step").json()
    assert by_step["x"] == "step" and by_step["series"]["loss"]["x"] == steps
    by_time = app.get("/api/run/sr/metrics?names=loss&x=time").json()
    assert by_time["x"] == "time" and by_time["series"]["loss"]["x"] == pytest.approx(times, abs=1e-9)
    assert by_time["series"]["loss"]["y"] == by_step["series"]["loss"]["y"]
    info = json.loads((root / "sr" / "run.json").read_text())
    created = datetime.fromisoformat(info["created_at"].replace("Z", "+00:00")).timestamp()
    wall = app.get("/api/run/sr/metrics?names=loss&x=wall").json()["series"]["loss"]["x"]
    first_time = json.loads((root / "sr" / "train.jsonl").read_text().splitlines()[0])["time"]
    assert wall == pytest.approx([created + first_time + t for t in times], abs=1e-6)
    # a zoomed range is given in the axis' unit
    zoomed = app.get(f"/api/run/sr/metrics?names=loss&x=time&xmin={times[10]}&xmax={times[20]}").json()
    assert zoomed["series"]["loss"]["x"] == pytest.approx(times[10:21], abs=1e-9)


def test_an_unknown_x_axis_is_refused(client):
    app, _ = client
    response = app.get("/api/run/sr/metrics?x=epoch")
    assert response.status_code == 400
    assert response.json() == {"error": "x must be one of step, time, wall, not 'epoch'"}
    assert app.get("/api/compare?runs=sr&metric=loss&x=epoch").status_code == 400


def test_every_axis_is_downsampled_and_keeps_the_spike(tmp_path):
    n = 20_000
    lines = [{"step": s, "time": s * 0.01, "loss": 9.0 if s == 12_345 else 1.0} for s in range(n)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    store = MetricStore(tmp_path / "train.jsonl")
    store.refresh()
    starts = [(-math.inf, 1000.0)]
    for axis, spike_x in (("step", 12_345), ("time", 123.45), ("wall", 1123.45)):
        chart = store.chart("loss", 200, axis=axis, starts=starts)
        assert chart["points"] == n and len(chart["x"]) <= 202
        assert max(chart["y"]) == 9.0 and chart["x"][chart["y"].index(9.0)] == pytest.approx(spike_x)
    assert "time" not in store.names()


def test_a_resumed_runs_wall_clock_starts_again_at_its_resume(tmp_path):
    # the resumed stretch's clock goes on from the last kept line (time 3.0 at step 3)
    lines = [{"step": s, "time": float(s)} | {"loss": 1.0} for s in (1, 2, 3)]
    lines += [{"step": s, "time": 3.0 + (s - 3) * 0.5, "loss": 1.0} for s in (4, 5)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    info = {"created_at": "2026-01-01T00:00:00Z", "resumes": [{"at": "2026-01-01T01:00:00Z", "step": 3}]}
    store = MetricStore(tmp_path / "train.jsonl")
    store.refresh()
    start = datetime.fromisoformat("2026-01-01T00:00:00+00:00").timestamp()
    wall = store.chart("loss", 100, axis="wall", starts=stretch_starts(info))["x"]
    assert wall == [start + 1, start + 2, start + 3, start + 3600 + 0.5, start + 3600 + 1.0]


def test_the_index_holds_the_time_parsing_gives(tmp_path):
    sr_like(tmp_path)
    indexed = MetricStore(tmp_path / "sr" / "train.jsonl", tmp_path / "sr" / "train.index")
    parsed = MetricStore(tmp_path / "sr" / "train.jsonl")
    indexed.refresh()
    parsed.refresh()
    assert indexed._indexed == parsed.lines  # the index covered the whole log: nothing was parsed
    for name in ("time", "loss"):
        assert np.array_equal(indexed.series(name)[1], parsed.series(name)[1]), name


def test_csv_download_is_what_runforge_csv_writes(client):
    app, root = client
    response = app.get("/api/run/sr/metrics.csv")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert 'filename="sr_metrics.csv"' in response.headers["content-disposition"]
    from runforge.monitor.analysis import table_rows, to_csv

    assert response.text == to_csv(table_rows(root / "sr", "metrics"), None, "sr")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:3] == ["step", "time", "loss"] and len(rows) == STEPS + 1
    chosen = list(csv.reader(io.StringIO(app.get("/api/run/sr/metrics.csv?names=val.psnr,loss").text)))
    assert chosen[0] == ["step", "val.psnr", "loss"] and chosen[10] == ["10", "21.0", "0.1"]
    refused = app.get("/api/run/sr/metrics.csv?names=nope")
    assert refused.status_code == 400 and "no field 'nope'" in refused.json()["error"]


# ----------------------------------------------------------------------------- in chromium

needs_chromium = pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)


@needs_chromium
def test_run_page_charts_in_chromium(tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    run_dir = sr_like(tmp_path / "runs")
    server = Server(str(tmp_path / "runs"))
    try:
        browser.get(server.url + "/run/sr")
        wait_for(lambda: figure(browser, "weights.l1"), what="every chart to be drawn")

        # sections by key prefix, the loss first (by name it would be adaptive.lr_factor)
        sections = [d.get_attribute("data-section") for d in css(browser, "details.chart-section")]
        assert sections == SR_ORDER
        assert [d.get_attribute("data-metric") for d in css(browser, ".chart-card")] == [
            "loss", "grad_norm", "lr", "reward", "losses.l1", "losses.perceptual", "val.psnr", "val.ssim",
            "adaptive.lr_factor", "adaptive.plateau_counter", "weights.l1"]
        voxel_keys = ["camera_index", "temperature", "grid_stats.occupancy", "losses.total", "losses.sds", "val.psnr"]
        assert browser.execute_script("return chartSections(arguments[0])", voxel_keys) == [
            ["losses", ["losses.sds", "losses.total"]], ["val", ["val.psnr"]], ["grid_stats", ["grid_stats.occupancy"]],
            ["main", ["camera_index", "temperature"]]]
        css(browser, 'details[data-section="adaptive"] > summary')[0].click()  # sections fold
        wait_for(lambda: not css(browser, '.chart-card[data-metric="adaptive.lr_factor"]')[0].is_displayed(),
                 what="the adaptive section to fold")

        # a constant series: an axis around its value, and smoothed it stays flat
        assert figure(browser, "lr")["layout"]["yaxis"]["range"] == pytest.approx([0.019, 0.021])
        browser.execute_script("const s = document.getElementById('smooth'); s.value = '0.9';"
                               "s.dispatchEvent(new Event('input'));")
        wait_for(lambda: len(figure(browser, "lr")["data"]) == 2, what="the smoothed lr trace")
        assert set(figure(browser, "lr")["data"][1]["y"]) == {0.02}
        css(browser, "#reset-zoom")[0].click()  # and stays so after a reset of the zoom
        wait_for(lambda: figure(browser, "lr")["layout"]["xaxis"]["autorange"], what="the zoom reset")
        assert figure(browser, "lr")["layout"]["yaxis"]["range"] == pytest.approx([0.019, 0.021])
        loss = figure(browser, "loss")["data"]
        assert loss[1]["y"] == pytest.approx(debiased_ema(loss[0]["y"], 0.9))

        # the synced crosshair: hovering the loss chart shows a hover on the lr chart too
        assert not css(browser, '.chart[data-metric="lr"] .hoverlayer .hovertext')
        hover(browser, "loss")
        wait_for(lambda: css(browser, '.chart[data-metric="lr"] .hoverlayer .hovertext'), what="the synced hover")
        ActionChains(browser).move_to_element(css(browser, "#run-title")[0]).perform()
        wait_for(lambda: not css(browser, '.chart[data-metric="lr"] .hoverlayer .hovertext'), what="the unhover")

        # the x axis: training time, then wall clock, on every chart
        steps, times = logged_times(run_dir, "loss")
        assert figure(browser, "loss")["data"][0]["x"] == steps
        Select(css(browser, "#x-axis")[0]).select_by_value("time")
        wait_for(lambda: figure(browser, "loss")["data"][0]["x"] != steps, what="the loss chart over time")
        assert figure(browser, "loss")["data"][0]["x"] == pytest.approx(times, abs=1e-9)
        assert figure(browser, "val.psnr")["layout"]["xaxis"]["title"]["text"] == "training time (s)"
        Select(css(browser, "#x-axis")[0]).select_by_value("wall")
        wait_for(lambda: figure(browser, "loss")["layout"]["xaxis"]["type"] == "date", what="a wall-clock axis")
        year = json.loads((run_dir / "run.json").read_text())["created_at"][:4]
        assert all(str(x).startswith(year + "-") for x in figure(browser, "loss")["data"][0]["x"])

        # log scale on a negative series: a note, and a linear chart instead of an empty one
        css(browser, '.chart-card[data-metric="reward"] .chart-log')[0].click()
        note = css(browser, '.chart-card[data-metric="reward"] .chart-note')[0]
        wait_for(lambda: note.text, what="the log-scale note")
        assert note.text == f"log scale needs positive values: {STEPS} of {STEPS} points ≤ 0"
        assert figure(browser, "reward")["layout"]["yaxis"]["type"] == "linear"
        assert css(browser, '.chart[data-metric="reward"] .scatterlayer .trace path.js-line')
        css(browser, '.chart-card[data-metric="loss"] .chart-log')[0].click()
        wait_for(lambda: figure(browser, "loss")["layout"]["yaxis"]["type"] == "log", what="loss on a log axis")
        assert figure(browser, "lr")["layout"]["yaxis"]["type"] == "linear"  # only the chart asked for it
        assert not css(browser, '.chart-card[data-metric="loss"] .chart-note')[0].text

        # metric search filters the charts by key substring; a section without a match is hidden
        css(browser, "#metric-search")[0].send_keys("L1")
        wait_for(lambda: [d.get_attribute("data-metric") for d in css(browser, ".chart-card") if d.is_displayed()]
                 == ["losses.l1", "weights.l1"], what="the search to leave the l1 charts")
        assert [d.get_attribute("data-section") for d in css(browser, "details.chart-section")
                if d.is_displayed()] == ["losses", "weights"]

        # the CSV links: the whole log, and one chart's key
        status, body, headers = server.request("GET", css(browser, "#metrics-csv")[0].get_attribute("href")
                                               .removeprefix(server.url))
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert status == 200 and rows[0][:3] == ["step", "time", "loss"] and len(rows) == STEPS + 1
        link = css(browser, '.chart-card[data-metric="val.psnr"] .chart-csv')[0].get_attribute("href")
        _, body, _ = server.request("GET", link.removeprefix(server.url))
        assert body.decode().splitlines()[:2] == ["step,val.psnr", "1,"]
        assert not severe_logs(browser)
    finally:
        server.stop()


def hover(driver, metric: str) -> None:
    """Put the mouse on a chart until plotly shows its hover there (a redraw still in flight clears it)."""
    from selenium.webdriver.common.action_chains import ActionChains

    for _ in range(5):
        ActionChains(driver).move_to_element(css(driver, "#run-title")[0]).perform()
        ActionChains(driver).move_to_element(css(driver, f'.chart[data-metric="{metric}"] .nsewdrag')[0]).perform()
        try:
            wait_for(lambda: css(driver, f'.chart[data-metric="{metric}"] .hoverlayer .hovertext'), timeout=2)
            return
        except AssertionError:
            continue
    raise AssertionError(f"no hover on the {metric} chart")


def debiased_ema(ys: list[float], weight: float) -> list[float]:
    out, last, debias = [], 0.0, 0.0
    for y in ys:
        last = last * weight + (1 - weight) * y
        debias = debias * weight + (1 - weight)
        out.append(last / debias)
    return out


@needs_chromium
def test_compare_page_smooths_and_switches_its_x_axis(tmp_path, browser):  # noqa: F811
    from selenium.webdriver.support.ui import Select

    root = tmp_path / "runs"
    make_run(root, "a", steps=30)
    make_run(root, "b", steps=30, loss=lambda step: 2.0 / step)
    server = Server(str(root))
    try:
        browser.get(server.url + "/compare?runs=a,b")
        wait_for(lambda: len(css(browser, "#compare-chart .scatterlayer .trace")) == 2, what="two overlaid traces")
        browser.execute_script("const s = document.getElementById('compare-smooth'); s.value = '0.8';"
                               "s.dispatchEvent(new Event('input'));")
        wait_for(lambda: len(css(browser, "#compare-chart .scatterlayer .trace")) == 4, what="two smoothed traces")
        data = browser.execute_script("return document.getElementById('compare-chart').data.map(t => t.y)")
        assert data[1] == pytest.approx(debiased_ema(data[0], 0.8))
        assert data[3] == pytest.approx(debiased_ema(data[2], 0.8))
        Select(css(browser, "#compare-x-axis")[0]).select_by_value("time")
        wait_for(lambda: browser.execute_script("return document.getElementById('compare-chart').data[0].x[0]") == 0,
                 what="the compare chart over training time")
        assert not severe_logs(browser)
    finally:
        server.stop()
