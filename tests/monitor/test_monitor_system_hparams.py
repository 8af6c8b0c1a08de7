"""The run page's System section, the hparams (parallel coordinates) page, dark mode and the keyboard
shortcuts, in a real headless Chromium against a real server; and the two JSON routes behind them."""

from __future__ import annotations

import json

import pytest

from monitor_helpers import (HAS_CHROMIUM, NO_CHROMIUM, Server, browser, css, make_run, severe_logs,  # noqa: F401
                             wait_for)
from runforge.monitor.routes import system_columns
from runforge.run.layout import SYSTEM_FILE

needs_chromium = pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)

CONFIGS = {
    "run-a": {"lr": 0.1, "optimizer": "adam", "seed": 0},
    "run-b": {"lr": 0.01, "optimizer": "sgd", "seed": 0},
    "run-c": {"lr": 0.001, "optimizer": "adam", "seed": 0},
}
"""Run key -> config beyond `steps` (the same in every run): lr and optimizer vary, seed does not."""
CPU = [12.5, 55.0, 98.5, 40.0, 20.0]


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "runs"
    for key, config in CONFIGS.items():
        make_run(root, key, steps=10, config=config, loss=lambda step, lr=config["lr"]: lr / step)
    samples = [{"step": 2 * i, "time": 10.0 * i, "wall": 1.8e9 + 10 * i, "cpu_percent": cpu,
                "rss_bytes": (1 + i) * 2**30, "ram_percent": 30.0 + i} for i, cpu in enumerate(CPU)]
    (root / "run-a" / SYSTEM_FILE).write_text("".join(json.dumps(s) + "\n" for s in samples)
                                              + '{"step": 12, "ti', encoding="utf-8")  # a cut last line
    server = Server(str(root))
    yield server
    server.stop()


LINE_PIXELS = """
  let drawn = 0;
  for (const canvas of document.querySelectorAll(arguments[0] + " canvas")) {
    const gl = canvas.getContext("webgl");
    if (!gl) continue;
    const pixels = new Uint8Array(4 * canvas.width * canvas.height);
    gl.readPixels(0, 0, canvas.width, canvas.height, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) drawn++;
  }
  return drawn;"""
"""Painted pixels of a chart's WebGL canvases (plotly keeps their drawing buffer)."""


def _plot(driver, selector, expression):
    """`expression` evaluated on the plotly chart `selector` (`gd`), once it has been drawn."""
    return driver.execute_script(f"const gd = document.querySelector({json.dumps(selector)}); "
                                 f"return gd && gd._fullLayout ? {expression} : null;")


# ----------------------------------------------------------------------------- the routes


def test_system_route_answers_columns_and_an_empty_answer_without_samples(served):
    data = served.get_json("/api/run/run-a/system")
    assert data["samples"] == len(CPU)
    assert data["series"]["cpu_percent"] == CPU
    assert data["time"] == [0.0, 10.0, 20.0, 30.0, 40.0] and data["step"] == [0, 2, 4, 6, 8]
    assert set(data["series"]) == {"cpu_percent", "rss_bytes", "ram_percent"}
    assert served.get_json("/api/run/run-b/system") == {"samples": 0, "step": [], "time": [], "wall": [], "series": {}}
    status, body, _ = served.request("GET", "/api/run/nope/system")
    assert status == 404 and json.loads(body) == {"error": "no run 'nope' under the served roots"}


def test_system_columns_keep_every_nth_sample_and_the_last():
    samples = [{"step": i, "time": float(i), "wall": 0.0, "cpu_percent": float(i)} for i in range(25)]
    data = system_columns(samples, 10)
    assert data["step"] == [0, 3, 6, 9, 12, 15, 18, 21, 24] and data["samples"] == 25
    samples[3]["gpu_mem_allocated_gb"] = 1.5  # a figure some samples lack is null in the others
    assert system_columns(samples, 10)["series"]["gpu_mem_allocated_gb"] == [None, 1.5] + [None] * 7


def test_hparams_route_gives_config_metrics_and_headline_and_names_an_unknown_run(served):
    data = served.get_json("/api/hparams?runs=run-a,run-c")
    assert [r["key"] for r in data["runs"]] == ["run-a", "run-c"]
    first = data["runs"][0]
    assert first["config"] == {"steps": 10, **CONFIGS["run-a"]}
    assert first["metrics"]["loss"] == pytest.approx(0.1 / 10) and first["metrics"]["losses.l1"] == pytest.approx(0.005)
    assert first["headline"]["name"] == "loss"
    status, body, _ = served.request("GET", "/api/hparams?runs=run-a,nope")
    assert status == 404 and json.loads(body) == {"error": "no run 'nope' under the served roots"}
    status, body, _ = served.request("GET", "/api/hparams")
    assert status == 400 and json.loads(body) == {"error": "give runs=KEY,KEY"}


def test_only_the_hparams_page_lets_plotly_compile_its_webgl_code(served):
    policies = {path: served.request("GET", path)[2]["content-security-policy"] for path in ("/", "/hparams?runs=a")}
    assert "script-src 'self';" in policies["/"]
    assert "script-src 'self' 'unsafe-eval';" in policies["/hparams?runs=a"]


# ----------------------------------------------------------------------------- in the browser


@needs_chromium
def test_hparams_page_draws_one_line_per_run_over_the_varying_config_keys(served, browser):
    browser.get(served.url + "/")
    wait_for(lambda: len(css(browser, "#runs-table tbody tr[data-key]")) == 3, what="three rows")
    assert css(browser, "#hparams-btn")[0].get_attribute("disabled") is not None
    for key in CONFIGS:  # a tick redraws the rows: find each box anew
        css(browser, f'#runs-table input.select[data-key="{key}"]')[0].click()
    wait_for(lambda: css(browser, "#hparams-btn")[0].is_enabled(), what="the hparams button to be enabled")
    css(browser, "#hparams-btn")[0].click()
    wait_for(lambda: "/hparams?runs=" in browser.current_url, what="the hparams page")
    chart = "#hparams-chart"
    labels = wait_for(lambda: _plot(browser, chart, "gd.data[0].dimensions.map(d => d.label)"), what="the parcoords")
    assert _plot(browser, chart, "gd.data[0].type") == "parcoords"
    assert labels[:2] == ["lr", "optimizer"]  # the config keys that vary; seed and steps do not
    assert not {"seed", "steps"} & set(labels) and "loss" in labels
    dims = {d["label"]: d for d in _plot(browser, chart, "gd.data[0].dimensions")}
    keys = [tr.get_attribute("data-key") for tr in css(browser, "#hparams-table tbody tr")]
    assert sorted(keys) == sorted(CONFIGS) and len(dims["lr"]["values"]) == 3  # one line per run
    assert dims["lr"]["values"] == [CONFIGS[key]["lr"] for key in keys]
    assert dims["optimizer"]["ticktext"] == ["adam", "sgd"]
    assert dims["optimizer"]["values"] == [["adam", "sgd"].index(CONFIGS[key]["optimizer"]) for key in keys]
    assert _plot(browser, chart, "gd.data[0].line.color") == pytest.approx([CONFIGS[key]["lr"] / 10 for key in keys])
    titles = wait_for(lambda: [t.text for t in css(browser, f"{chart} .axis-title")], what="the axis titles")
    assert titles[:2] == ["lr", "optimizer"]
    assert not css(browser, f"{chart} .no-webgl")
    assert browser.execute_script(LINE_PIXELS, chart) > 100  # the lines are drawn on the WebGL canvases

    # pick another axis: the seed (constant) joins the chart
    css(browser, "#hparams-picker summary")[0].click()
    css(browser, '#hparams-dims input[data-dim="config:seed"]')[0].click()
    wait_for(lambda: "seed" in _plot(browser, chart, "gd.data[0].dimensions.map(d => d.label)"), what="the seed axis")
    assert browser.find_element("id", "hparams-color").get_attribute("value") == "metrics:loss"
    assert not severe_logs(browser)

    # from the compare page too
    browser.get(served.url + "/compare?runs=run-a,run-b")
    link = wait_for(lambda: css(browser, "#hparams-link"), what="the hparams link")[0]
    assert link.get_attribute("href").endswith("/hparams?runs=run-a,run-b")


@needs_chromium
def test_hparams_page_names_an_unknown_run(served, browser):
    browser.get(served.url + "/hparams?runs=run-a,nope")
    message = wait_for(lambda: css(browser, "#hparams-error"), what="the error message")[0]
    assert message.text == "no run 'nope' under the served roots"
    assert not css(browser, "#hparams-chart")


@needs_chromium
def test_system_section_charts_cpu_rss_and_ram_of_a_run_with_system_jsonl(served, browser):
    browser.get(served.url + "/run/run-a")
    cpu = '[data-system="cpu"]'
    y = wait_for(lambda: _plot(browser, cpu, "gd.data[0].y"), what="the CPU chart")
    assert y == CPU and _plot(browser, cpu, "gd.data[0].x") == [0, 10, 20, 30, 40]
    assert _plot(browser, cpu, "gd.layout.xaxis.title.text") == "training time (s)"
    assert _plot(browser, '[data-system="rss"]', "gd.data[0].y") == [1, 2, 3, 4, 5]  # GiB
    assert _plot(browser, '[data-system="ram"]', "gd.data[0].y") == [30, 31, 32, 33, 34]
    assert not css(browser, '[data-system="gpu-mem"]')  # no GPU figures recorded, no GPU chart
    assert css(browser, "#system-note")[0].text == "5 samples of system.jsonl"

    browser.get(served.url + "/run/run-b")
    wait_for(lambda: css(browser, "#system-note")[0].text == "No system samples (system.jsonl) yet.",
             what="the no-samples note")
    assert not css(browser, "#system-charts .chart")


def _colors(driver):
    return driver.execute_script("return [getComputedStyle(document.body).backgroundColor, "
                                 "document.documentElement.dataset.theme || null]")


@needs_chromium
def test_dark_mode_toggle_recolours_page_and_charts_and_survives_a_reload(served, browser):
    browser.get(served.url + "/run/run-a")
    paper = "[data-system='cpu']"
    wait_for(lambda: _plot(browser, paper, "gd._fullLayout.paper_bgcolor"), what="a chart")
    light_body, theme = _colors(browser)
    light_paper = _plot(browser, paper, "gd._fullLayout.paper_bgcolor")
    assert theme is None and light_body == "rgb(248, 249, 251)" and light_paper == "rgb(255, 255, 255)"
    toggle = css(browser, "#theme-toggle")[0]
    assert toggle.text == "dark mode"
    toggle.click()
    assert _colors(browser) == ["rgb(15, 18, 25)", "dark"]
    wait_for(lambda: _plot(browser, paper, "gd._fullLayout.paper_bgcolor") == "rgb(23, 27, 36)",
             what="the chart paper to turn dark")
    assert css(browser, "#theme-toggle")[0].text == "light mode"

    browser.refresh()
    assert _colors(browser) == ["rgb(15, 18, 25)", "dark"]
    wait_for(lambda: _plot(browser, paper, "gd._fullLayout.paper_bgcolor") == "rgb(23, 27, 36)",
             what="a dark chart after the reload")
    assert _plot(browser, paper, "gd._fullLayout.font.color") == "rgb(228, 231, 236)"
    assert not severe_logs(browser)


@needs_chromium
def test_dark_by_default_when_the_system_prefers_it(served, browser):
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia",
                            {"features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    browser.get(served.url + "/")
    assert _colors(browser) == ["rgb(15, 18, 25)", None]  # nothing saved: the system's choice
    wait_for(lambda: css(browser, "#theme-toggle")[0].text == "light mode", what="the toggle's label")


@needs_chromium
def test_keyboard_shortcuts(served, browser):
    from selenium.webdriver.common.action_chains import ActionChains

    browser.get(served.url + "/run/run-a")
    wait_for(lambda: css(browser, "#run-title")[0].text != "run-a", what="the run page")
    keys = ActionChains(browser)

    keys.send_keys("?").perform()
    help_box = wait_for(lambda: [e for e in css(browser, "#shortcut-help") if e.is_displayed()], what="the help")[0]
    shown = browser.execute_script("return [...document.querySelectorAll('#shortcut-help tr')].map(tr => "
                                   "[...tr.querySelectorAll('kbd')].map(k => k.textContent).join(' '))")
    assert shown == ["?", "/", "g r", "d", "Esc"] and "runs table" in help_box.text
    keys.send_keys("\ue00c").perform()  # Escape
    wait_for(lambda: not css(browser, "#shortcut-help")[0].is_displayed(), what="Esc to close the help")

    keys.send_keys("d").perform()
    assert _colors(browser)[1] == "dark"
    keys.send_keys("g").send_keys("r").perform()
    wait_for(lambda: browser.current_url == served.url + "/", what="g r to open the runs table")
    wait_for(lambda: css(browser, "#runs-table tbody tr[data-key]"), what="the runs table")

    keys.send_keys("/").perform()
    assert browser.switch_to.active_element.get_attribute("id") == "filter"
    keys.send_keys("?d").perform()  # typed into the filter box: no help, no theme switch
    assert css(browser, "#filter")[0].get_attribute("value") == "?d"
    assert not [e for e in css(browser, "#shortcut-help") if e.is_displayed()]
    assert _colors(browser)[1] == "dark"
