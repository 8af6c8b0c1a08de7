"""How the run page and the compare page show status: crashed runs, a finished run's bar, epoch-second
fields as local date-times, and fields null in every compared run folded into one line."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest

from monitor_helpers import (HAS_CHROMIUM, NO_CHROMIUM, browser, css, edit_info, make_crashed,  # noqa: F401
                             make_run, open_page, severe_logs, wait_for)

pytestmark = pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)

SAVED_AT = 1796567203.5
"""An epoch-second value the page must show as a date (2026-12-06 14:26:43 UTC)."""


def local(seconds: float) -> str:
    """What the page writes for epoch seconds: the machine's local time (the browser's too)."""
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def edit_status(run_dir, **fields) -> None:
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    (run_dir / "status.json").write_text(json.dumps({**status, **fields}), encoding="utf-8")


def test_a_crashed_run_says_crashed_with_no_eta_and_when_it_was_last_heard_of(tmp_path, browser):
    run_dir = make_crashed(tmp_path / "runs")
    heard = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))["last_update_time"]
    with open_page(browser, tmp_path / "runs", "/run/crashed"):
        wait_for(lambda: css(browser, "#status")[0].text.strip(), what="the status panel")
        assert css(browser, "#run-status")[0].text == "crashed"
        panel = json.loads(css(browser, "#status")[0].text)
        assert (panel["status"], panel["training_active"], panel["eta_total_formatted"]) == ("crashed", False, None)
        assert css(browser, "#progress-text")[0].text == "step 12 / 20"  # no ETA, no s/it of a dead process
        bar = css(browser, "#progress")[0]
        assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("12", "20")
        last = css(browser, "#last-update")[0]
        assert last.text == "last update " + local(heard)
        assert last.get_attribute("title") == f"status.json last_update_time {heard}"


def test_a_finished_run_shows_a_full_bar_even_when_its_steps_were_0_based(tmp_path, browser):
    run_dir = make_run(tmp_path / "runs", "zero-based", steps=20)
    # a script's `for step in range(20)`: its last step is 19
    edit_info(run_dir, step=19)
    edit_status(run_dir, step_current=19, step_max=20, eta_total_formatted="0:00:01")
    with open_page(browser, tmp_path / "runs", "/run/zero-based"):
        wait_for(lambda: css(browser, "#progress-text")[0].text.startswith("step 19 / 20"), what="the progress")
        bar = css(browser, "#progress")[0]
        assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("20", "20")
        assert "ETA" not in css(browser, "#progress-text")[0].text


def test_timestamps_show_as_local_dates_and_durations_as_numbers(tmp_path, browser):
    root = tmp_path / "runs"
    run_dir = make_run(root, "stamped", steps=10,
                       snapshots={10: {"saved_time": SAVED_AT, "ellipse_time": 0.0025, "created_at": "yesterday"}})
    snapshot = json.loads((run_dir / "stats" / "stats_10.json").read_text(encoding="utf-8"))
    with open_page(browser, root, "/run/stamped"):
        wait_for(lambda: css(browser, "#snapshot-table tr"), what="the snapshot table")
        cells = {row.find_elements("css selector", "td")[0].text: row.find_elements("css selector", "td")[-1]
                 for row in css(browser, "#snapshot-table tr") if len(row.find_elements("css selector", "td")) == 2}
        assert cells["saved_time"].text == local(SAVED_AT)
        assert cells["saved_time"].get_attribute("title") == "1796567203.5"
        assert cells["last_update_time"].text == local(snapshot["last_update_time"])
        assert cells["ellipse_time"].text == "0.0025"  # a duration in seconds, not a moment
        assert cells["created_at"].text == "yesterday"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cells["last_update_time"].text)
        assert not severe_logs(browser)


def test_compare_folds_fields_null_in_every_run_into_one_line(tmp_path, browser):
    root = tmp_path / "runs"
    make_run(root, "a", steps=10, snapshots={10: {"psnr": 20.0, "ssim": 0.5, "lpips": None, "fid": None}})
    make_run(root, "b", steps=10, snapshots={10: {"psnr": 21.0, "ssim": None, "lpips": None, "fid": None}})
    with open_page(browser, root, "/compare?runs=a,b") as server:
        wait_for(lambda: css(browser, "#compare-nulls"), what="the line of fields null in all runs")
        # read at once: the table is drawn again every second
        table = browser.execute_script("return [...document.querySelectorAll('#compare-table tbody tr')]"
                                       ".map(tr => [...tr.cells].map(td => td.textContent))")
        nulls = [row["field"] for row in server.get_json("/api/compare?runs=a,b")["rows"]
                 if row["values"] == [None, None]]
        assert {"lpips", "fid", "vram_usage_gb"} <= set(nulls) and "ssim" not in nulls
        assert table[-1] == ["null in all runs: " + ", ".join(nulls)]
        rows = {cells[0]: cells[1:] for cells in table[:-1]}
        assert rows["psnr"] == ["20", "21", "1"]
        assert rows["ssim"] == ["0.5", "null", ""]  # null in one run only: still a row
        assert not set(nulls) & set(rows)
        stamp = json.loads((root / "a" / "stats" / "stats_10.json").read_text(encoding="utf-8"))["last_update_time"]
        assert rows["last_update_time"][0] == local(stamp)
