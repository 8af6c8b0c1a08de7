"""The dashboard in a real headless Chromium against a real server and a real training process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from monitor_helpers import (HAS_CHROMIUM, NO_CHROMIUM, Server, chromium, make_crashed, make_run, read_status,
                             start_toy, wait_for)

CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1400,1000")
XSS_NAME = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'

pytestmark = [
    pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM),
]


@pytest.fixture
def browser(tmp_path):
    driver = chromium(tmp_path / "profile", CHROME_FLAGS, 30, browser_logs=True)
    try:
        yield driver
    finally:
        driver.quit()


def _css(driver, selector):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def test_watch_and_steer_a_live_run_in_chromium(tmp_path, browser):
    root = tmp_path / "runs"
    make_run(root, "finished-run", name=XSS_NAME, steps=30, snapshots={30: {"best_quality_ever": 0.5}})
    live_dir = root / "live-run"
    trainer = start_toy(live_dir)
    server = Server(str(root))
    try:
        wait_for(lambda: read_status(live_dir).get("step_current", 0) > 20, what="the toy trainer to start")

        # the runs table: both runs, the hostile name shown as text and never run
        browser.get(server.url + "/")
        wait_for(lambda: len(_css(browser, "#runs-table tbody tr[data-key]")) == 2, what="two rows in the runs table")
        links = {a.text: a for a in _css(browser, "#runs-table a.run-link")}
        assert XSS_NAME in links, list(links)
        assert browser.execute_script("return window.__pwned === undefined")
        assert not _css(browser, "#runs-table img")
        def order():
            return [tr.get_attribute("data-key") for tr in _css(browser, "#runs-table tbody tr")]

        assert order() == ["live-run", "finished-run"]  # newest first
        _css(browser, '#runs-table th[data-sort="name"]')[0].click()
        wait_for(lambda: order() == ["finished-run", "live-run"], what="sorting by name")  # "<script..." < "live-run"
        filter_box = _css(browser, "#filter")[0]
        filter_box.send_keys("live")
        wait_for(lambda: order() == ["live-run"], what="the filter to leave the live run only")

        # the run page: a chart drawn by plotly with the logged points, and the snapshots list
        _css(browser, "#runs-table a.run-link")[0].click()
        wait_for(lambda: browser.current_url.endswith("/run/live-run"), what="the run page")
        wait_for(lambda: _css(browser, '.chart[data-metric="loss"] .main-svg .scatterlayer .trace path.js-line'),
                 what="the loss chart to be drawn")
        line = _css(browser, '.chart[data-metric="loss"] .scatterlayer .trace path.js-line')[0]
        assert line.get_attribute("d").count("L") > 5, "the loss curve has too few points"
        wait_for(lambda: _css(browser, "#gallery figure img[src]"), what="a sample image")
        wait_for(lambda: "step" in _css(browser, "#progress-text")[0].text, what="the progress text")
        before = {li.get_attribute("data-step") for li in _css(browser, "#snapshots li[data-step]")}

        # press "validate": the trainer validates at its next step and the new snapshot appears on the page
        step_before = read_status(live_dir)["step_current"]
        _css(browser, "#btn-validate")[0].click()
        wait_for(lambda: "sent validate" in _css(browser, "#control-msg")[0].text, what="the control acknowledgement")
        new = wait_for(lambda: {li.get_attribute("data-step") for li in _css(browser, "#snapshots li[data-step]")}
                       - before, timeout=15, what="a new snapshot in the list")
        new_step = int(new.pop())
        assert new_step >= step_before and new_step % 500 != 0, (new_step, step_before)
        snapshot = json.loads((live_dir / "stats" / f"stats_{new_step}.json").read_text())
        assert snapshot["step_current"] == new_step and snapshot["validation_loss_value"] is not None
        wait_for(lambda: f"step {new_step})" in (_css(browser, "#snapshot-view .meta") or [None])[0].text,
                 what="the new snapshot to be shown")
        browser.save_screenshot(str(tmp_path / "run_page.png"))
        assert (tmp_path / "run_page.png").stat().st_size > 10_000

        # the compare page overlays a metric of both runs
        browser.get(server.url + "/compare?runs=finished-run,live-run")
        wait_for(lambda: len(_css(browser, "#compare-chart .scatterlayer .trace")) == 2, what="two overlaid traces")
        wait_for(lambda: _css(browser, "#compare-table tbody tr"), what="the comparison table")
        browser.save_screenshot(str(tmp_path / "compare_page.png"))
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        server.stop()
        if trainer.poll() is None:
            subprocess.run([sys.executable, "-m", "runforge", "ctl", str(live_dir), "stop"], capture_output=True)
            try:
                trainer.wait(timeout=20)
            except subprocess.TimeoutExpired:
                trainer.kill()
                trainer.wait()
    assert trainer.returncode == 0
    assert json.loads((live_dir / "run.json").read_text())["status"] == "interrupted"


def test_a_crashed_run_page_says_crashed_and_how_to_resume(tmp_path, browser):
    run_dir = make_crashed(tmp_path / "runs")
    server = Server(str(tmp_path / "runs"))
    try:
        browser.get(server.url + "/run/crashed")
        wait_for(lambda: _css(browser, "#status")[0].text.strip(), what="the status panel")
        assert _css(browser, "#run-status")[0].text == "crashed"
        panel = json.loads(_css(browser, "#status")[0].text)
        assert panel["status"] == "crashed" and panel["training_active"] is False
        assert panel["eta_total_formatted"] is None and panel["step_current"] == 12
        assert f"resume with: runforge train toy --resume {run_dir.resolve()}" in _css(browser, "#run-notes")[0].text
        assert "ETA" not in _css(browser, "#progress-text")[0].text
        assert all(not button.is_enabled() for button in _css(browser, "button[data-command]"))
    finally:
        server.stop()
