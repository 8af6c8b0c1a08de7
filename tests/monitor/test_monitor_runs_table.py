"""The runs table in a real headless Chromium against a real server: config columns the user picks,
the filter language, the headline metric, tags and notes edited on the run page, and the compare
page with a run key that is not served."""

from __future__ import annotations

import json
import time

import pytest

import runforge
from monitor_helpers import HAS_CHROMIUM, NO_CHROMIUM, Server, browser, css, edit_info, make_run, severe_logs, wait_for  # noqa: F401
from runforge.run.layout import ANNOTATIONS_FILE

pytestmark = pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)

CONFIGS = {
    "small-lr": ({"lr": 0.001, "model": {"depth": 2}}, "splat"),
    "mid-lr": ({"lr": 0.005, "model": {"depth": 4}}, "unit"),
    "big-lr": ({"lr": 0.1, "model": {"depth": 4}}, "splat"),
    "no-lr": ({"model": {"depth": 8}, "optimizer": "adam"}, "unit"),
}
"""Run key -> (its config.json, its trainer)."""


@pytest.fixture
def served(tmp_path):
    root = tmp_path / "runs"
    for index, (key, (config, trainer)) in enumerate(CONFIGS.items()):
        run_dir = make_run(root, key, steps=5)
        (run_dir / "config.json").write_text(json.dumps(config), encoding="utf-8")
        edit_info(run_dir, trainer=trainer, created_at=f"2026-01-0{index + 1}T00:00:00Z")  # newest last
    with runforge.Run(out=root / "small-lr", resume=True, tensorboard=False, progress=False,
                      handle_signals=False) as run:
        run.log(5, {"val": {"psnr": 31.25}})
    server = Server(str(root))
    yield server, root
    server.stop()


def rows(driver):
    return [tr.get_attribute("data-key") for tr in css(driver, "#runs-table tbody tr[data-key]")]


def set_filter(driver, text):
    from selenium.webdriver.common.keys import Keys

    box = css(driver, "#filter")[0]
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text or Keys.BACKSPACE)


def filtered(driver, text):
    """The rows the table shows for `text`, once it shows them, and the message under the box."""
    set_filter(driver, text)
    wait_for(lambda: css(driver, "#filter")[0].get_attribute("value") == text, what=f"the filter {text!r}")
    time.sleep(0.2)  # the table renders on the input event
    error = css(driver, "#filter-error")[0]
    return rows(driver), (error.text if error.is_displayed() else "")


def test_filter_by_config_metrics_and_fields_shows_exactly_the_matching_rows(served, browser):
    server, _ = served
    browser.get(server.url + "/")
    wait_for(lambda: len(rows(browser)) == 4, what="four rows")
    assert filtered(browser, "lr<0.01") == (["mid-lr", "small-lr"], "")
    assert filtered(browser, "lr<0.01 trainer=splat") == (["small-lr"], "")
    assert filtered(browser, "lr>=0.005") == (["big-lr", "mid-lr"], "")
    assert filtered(browser, "lr=1e-1") == (["big-lr"], "")  # numbers compare as numbers
    assert filtered(browser, "model.depth=4 lr!=0.1") == (["mid-lr"], "")
    assert filtered(browser, "optimizer=ADAM") == (["no-lr"], "")
    assert filtered(browser, "val.psnr>30") == (["small-lr"], "")  # a metric key
    assert filtered(browser, "status=finished big") == (["big-lr"], "")  # a bare word: a substring of the name
    assert filtered(browser, "lrr<0.01") == ([], "unknown key 'lrr'")
    assert filtered(browser, "lr<abc") == ([], "'lr<abc': < needs a number, not 'abc'")
    assert filtered(browser, "lr=") == ([], "cannot read 'lr=': write key=value, key!=value, key<number, "
                                             "key>=number… or a word")
    assert filtered(browser, "") == (["no-lr", "big-lr", "mid-lr", "small-lr"], "")  # newest first
    assert css(browser, "#runs-table tbody tr")  # and the rows are still there
    assert not severe_logs(browser)


def test_a_picked_config_column_shows_the_values_sorts_and_survives_a_reload(served, browser):
    server, _ = served
    browser.get(server.url + "/")
    wait_for(lambda: len(rows(browser)) == 4, what="four rows")
    assert not css(browser, 'th[data-sort="config:lr"]')
    # the headline metric with its name: validation PSNR where logged, else the loss
    headline = {tr.get_attribute("data-key"): css(tr, "td.headline")[0].text
                for tr in css(browser, "#runs-table tbody tr[data-key]")}
    assert headline == {"small-lr": "val.psnr 31.25 dB", "mid-lr": "loss 0.2", "big-lr": "loss 0.2", "no-lr": "loss 0.2"}
    css(browser, "#columns-picker summary")[0].click()
    boxes = [box.get_attribute("data-column") for box in css(browser, "#columns-picker input[data-column]")]
    assert boxes == ["lr", "model.depth", "optimizer"]
    css(browser, '#columns-picker input[data-column="lr"]')[0].click()

    def column():
        return [td.text for td in css(browser, '#runs-table td.config[data-column="lr"]')]

    wait_for(lambda: column() == ["", "0.1", "0.005", "0.001"], what="the lr column")  # newest first
    css(browser, 'th[data-sort="config:lr"]')[0].click()
    wait_for(lambda: column() == ["0.001", "0.005", "0.1", ""], what="sorting by lr")  # a run without lr last
    browser.refresh()
    wait_for(lambda: len(rows(browser)) == 4, what="four rows after the reload")
    assert css(browser, 'th[data-sort="config:lr"]')[0].text == "lr"
    assert column() == ["", "0.1", "0.005", "0.001"]
    assert not severe_logs(browser)


def test_tags_and_note_edited_on_the_run_page_are_stored_and_shown_in_the_table(served, browser):
    server, root = served
    browser.get(server.url + "/run/mid-lr")
    wait_for(lambda: css(browser, "#run-tags")[0].text == "no tags", what="the tags of the run")
    assert not css(browser, "#tags-input")[0].is_displayed()  # the editor opens on request only
    css(browser, "#annotations-edit")[0].click()
    assert css(browser, "#tags-input")[0].is_displayed()
    css(browser, "#tags-input")[0].send_keys("baseline, sweep-1")
    note = "<b>diverged</b> after 3k steps"
    css(browser, "#note-input")[0].send_keys(note)
    css(browser, "#annotations-save")[0].click()
    wait_for(lambda: css(browser, "#annotations-msg")[0].text == "saved", what="the annotations to be saved")
    assert json.loads((root / "mid-lr" / ANNOTATIONS_FILE).read_text()) == {"tags": ["baseline", "sweep-1"], "note": note}
    assert [t.text for t in css(browser, "#run-tags .tag")] == ["baseline", "sweep-1"]
    assert css(browser, "#run-note")[0].text == note and not css(browser, "#run-note b")  # shown as text

    # a bad tag is refused with the server's message, and the file keeps what it had
    css(browser, "#annotations-edit")[0].click()
    css(browser, "#tags-input")[0].send_keys(" lr<1")
    css(browser, "#annotations-save")[0].click()
    wait_for(lambda: "tag 'lr<1' is not" in css(browser, "#annotations-msg")[0].text, what="the refusal")
    assert json.loads((root / "mid-lr" / ANNOTATIONS_FILE).read_text())["tags"] == ["baseline", "sweep-1"]

    browser.get(server.url + "/")
    wait_for(lambda: len(rows(browser)) == 4, what="four rows")
    row = css(browser, '#runs-table tr[data-key="mid-lr"]')[0]
    assert [t.text for t in css(row, "td.tags .tag")] == ["baseline", "sweep-1"]
    assert css(row, "td.tags .note")[0].get_attribute("title") == note
    assert filtered(browser, "tag=baseline") == (["mid-lr"], "")
    assert filtered(browser, "tag!=baseline lr<0.01") == (["small-lr"], "")
    assert filtered(browser, "sweep") == (["mid-lr"], "")  # a bare word matches a tag too
    assert not [e for e in severe_logs(browser) if "/annotations" not in e["message"]]  # only the refused save


PARSE_CASES = [
    ("", {"terms": [], "error": None}),
    ("lr<0.01 trainer=splat", {"terms": [{"key": "lr", "op": "<", "value": "0.01", "number": 0.01},
                                         {"key": "trainer", "op": "=", "value": "splat", "number": None}],
                               "error": None}),
    ("  Big   model.depth>=4 ", {"terms": [{"word": "big"}, {"key": "model.depth", "op": ">=", "value": "4",
                                                             "number": 4}], "error": None}),
    ("tag!=Baseline", {"terms": [{"key": "tag", "op": "!=", "value": "baseline", "number": None}], "error": None}),
    ("val.psnr>30.5", {"terms": [{"key": "val.psnr", "op": ">", "value": "30.5", "number": 30.5}], "error": None}),
    ("status=running lrr=1", {"terms": [], "error": "unknown key 'lrr'"}),
    ("lr<=x", {"terms": [], "error": "'lr<=x': <= needs a number, not 'x'"}),
    ("=3", {"terms": [], "error": "cannot read '=3': write key=value, key!=value, key<number, key>=number… or a word"}),
    ("lr==3", {"terms": [], "error": "cannot read 'lr==3': write key=value, key!=value, key<number, key>=number… "
                                     "or a word"}),
    ("lr<", {"terms": [], "error": "cannot read 'lr<': write key=value, key!=value, key<number, key>=number… "
                                   "or a word"}),
]


def test_the_filter_parser_on_a_table_of_cases(served, browser):
    server, _ = served
    browser.get(server.url + "/")
    wait_for(lambda: len(rows(browser)) == 4, what="the page's scripts")
    got = browser.execute_script(
        "return arguments[0].map(text => parseFilter(text, new Set(['lr', 'model.depth', 'val.psnr'])))",
        [text for text, _ in PARSE_CASES])
    assert got == [expected for _, expected in PARSE_CASES]


def test_compare_with_unknown_runs_names_them_and_stops_asking(served, browser):
    server, _ = served
    browser.get(server.url + "/compare?runs=nope,mid-lr,alsonope")
    wait_for(lambda: css(browser, "#compare-error"), what="the compare error")
    assert css(browser, "#compare-error")[0].text == "no run 'nope', 'alsonope' under the served roots"
    time.sleep(3.5)  # three polling intervals
    asked = browser.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('/api/compare')).length")
    assert asked == 1
    assert "update failed" in css(browser, "#live")[0].text
