"""Tags and a note per run: the reader and writer of annotations.json, the route that writes it from
the page (checked like a control request), and what a runs-table row carries beyond run.json."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

import runforge
from runforge.errors import BadInputError
from runforge.monitor.app import create_app
from runforge.monitor.catalog import Catalog
from runforge.monitor.row_fields import TAIL_BUDGET, headline, last_metrics
from runforge.run import read_annotations
from runforge.run.annotations import MAX_NOTE_BYTES, MAX_TAGS, write_annotations
from runforge.run.layout import ANNOTATIONS_FILE
from monitor_helpers import make_run

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def served(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=3)
    with TestClient(create_app([tmp_path / "runs"], warm_runs=0)) as client:
        yield client, run_dir


def _post(client, body, headers=JSON, key="r"):
    response = client.post(f"/api/run/{key}/annotations", content=body, headers=headers)
    return response.status_code, response.json()


def test_annotations_round_trip_through_the_route_the_file_and_the_reader(served):
    client, run_dir = served
    assert read_annotations(run_dir) == {"tags": [], "note": ""}  # no file yet: none, not an error
    assert client.get("/api/run/r/annotations").json() == {"tags": [], "note": ""}
    note = "lr too high?\n<b>not bold</b> — ünïcode"
    status, answer = _post(client, json.dumps({"tags": ["baseline", "lr:1e-3", "baseline"], "note": note}))
    assert (status, answer) == (200, {"tags": ["baseline", "lr:1e-3"], "note": note})  # a repeated tag once
    assert json.loads((run_dir / ANNOTATIONS_FILE).read_text(encoding="utf-8")) == answer
    assert read_annotations(run_dir) == answer
    assert client.get("/api/run/r/annotations").json() == answer
    row = next(r for r in client.get("/api/runs").json()["runs"] if r["key"] == "r")
    assert (row["tags"], row["note"]) == (["baseline", "lr:1e-3"], note)  # the cached row was read again
    assert [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] == []  # written atomically


@pytest.mark.parametrize("body, says", [
    (b"", "must be a JSON object"),
    (b"[]", "must be a JSON object"),
    (b'{"tags": "baseline"}', "tags must be a list of strings"),
    (b'{"tags": [1]}', "tags must be a list of strings"),
    (b'{"tags": ["two words"]}', "tag 'two words' is not 1-32 letters"),
    (b'{"tags": [""]}', "tag '' is not"),
    (b'{"tags": ["lr<1"]}', "tag 'lr<1' is not"),
    (json.dumps({"tags": ["x" * 33]}).encode(), "is not 1-32 letters"),
    (json.dumps({"tags": [f"t{i}" for i in range(MAX_TAGS + 1)]}).encode(), f"at most {MAX_TAGS} tags, not 21"),
    (b'{"note": 3}', "note must be a string"),
    (json.dumps({"note": "é" * (MAX_NOTE_BYTES // 2 + 1)}).encode(), "longer than 4096 bytes"),  # bytes, not characters
    (b'{"tags": [], "colour": "red"}', "unknown field 'colour'"),
    (b'{"note": "\\ud800"}', "not valid Unicode text"),
    (b'{"tags": ["\\ud800"]}', "is not 1-32 letters"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_body_is_refused_with_400_and_nothing_is_written(served, body, says):
    client, run_dir = served
    write_annotations(run_dir, ["kept"], "old note")
    before = (run_dir / ANNOTATIONS_FILE).read_bytes()
    status, answer = _post(client, body)
    assert status == 400 and says in answer["error"], answer
    assert (run_dir / ANNOTATIONS_FILE).read_bytes() == before


@pytest.mark.parametrize("headers, status, says", [
    ({"Content-Type": "text/plain"}, 415, "annotations requests must be JSON"),
    ({**JSON, "Origin": "http://evil.example"}, 403, "another origin"),
])
def test_a_write_from_outside_the_page_is_refused(served, headers, status, says):
    client, run_dir = served
    assert _post(client, b'{"tags": ["x"]}', headers)[0] == status
    assert not (run_dir / ANNOTATIONS_FILE).exists()
    code, answer = _post(client, b'{"tags": ["x"]}' + b" " * 40_000)
    assert code == 413 and "at most 32768 bytes" in answer["error"] and not (run_dir / ANNOTATIONS_FILE).exists()


def test_the_token_is_needed_when_set_and_an_unknown_run_is_404(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=2)
    with TestClient(create_app([tmp_path / "runs"], token="s3cret", warm_runs=0)) as client:
        status, answer = _post(client, b'{"tags": ["x"]}')
        assert status == 403 and "token" in answer["error"] and not (run_dir / ANNOTATIONS_FILE).exists()
        assert _post(client, b'{"tags": ["x"]}', {**JSON, "X-Runforge-Token": "s3cret"}) == (200, {"tags": ["x"], "note": ""})
        status, answer = _post(client, b'{"tags": ["x"]}', {**JSON, "X-Runforge-Token": "s3cret"}, key="nope")
        assert status == 404 and "no run 'nope'" in answer["error"]


def test_an_annotations_file_that_links_out_of_the_run_is_neither_read_nor_replaced(served, tmp_path):
    client, run_dir = served
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"tags": ["secret"], "note": "outside"}))
    (run_dir / ANNOTATIONS_FILE).symlink_to(outside)
    assert client.get("/api/run/r/annotations").json() == {"tags": [], "note": ""}
    status, answer = _post(client, b'{"tags": ["x"]}')
    assert status == 403 and "links out of the run" in answer["error"]
    assert json.loads(outside.read_text())["tags"] == ["secret"]


def test_the_reader_names_a_damaged_file_and_the_table_shows_no_tags_for_it(tmp_path):
    run_dir = make_run(tmp_path / "runs", "r", steps=2)
    (run_dir / ANNOTATIONS_FILE).write_text('{"tags": ["a b"]}')
    with pytest.raises(BadInputError, match=r"annotations.json: tag 'a b' is not"):
        read_annotations(run_dir)
    (run_dir / ANNOTATIONS_FILE).write_text("{not json")
    with pytest.raises(BadInputError, match=r"annotations.json: is not valid JSON"):
        read_annotations(run_dir)
    catalog = Catalog([tmp_path / "runs"])
    row = catalog.row(catalog.entries()[0])
    assert (row["tags"], row["note"], row["name"]) == ([], "", "r")


def test_a_row_carries_the_flat_config_the_last_metrics_and_the_headline(tmp_path):
    with runforge.Run(trainer="unit", config={"lr": 0.01, "model": {"depth": 3}, "cams": list(range(40))},
                      out=tmp_path / "runs" / "r", steps=4, tensorboard=False, progress=False,
                      handle_signals=False) as run:
        for step in range(1, 5):
            run.log(step, {"loss": 1.0 / step, "lr": 0.01})
        run.log(2, {"val": {"psnr": 30.5}})
    catalog = Catalog([tmp_path / "runs"])
    row = catalog.row(catalog.entries()[0])
    assert row["config"] == {"lr": 0.01, "model.depth": 3}  # a 40-long list is no column
    assert row["metrics"] == {"loss": 0.25, "lr": 0.01, "val.psnr": 30.5}
    assert row["headline"] == {"name": "val.psnr", "value": 30.5, "unit": "dB"}


@pytest.mark.parametrize("metrics, expected", [
    ({"loss": 0.5, "val.loss": 0.7}, ("val.loss", None)),  # toy
    ({"loss_train": 0.2, "loss_valid": 0.3, "lr": 1e-3}, ("loss_valid", None)),  # kolmogorov
    ({"losses.total": 0.01, "temperature": 0.3}, ("losses.total", None)),  # voxel before its first validation
    ({"losses.total": 0.01, "val.psnr": 22.0}, ("val.psnr", "dB")),  # voxel, splat, sr
    ({"zeta": 1.0, "alpha": 2.0}, ("alpha", None)),  # a script's own names: its first, never blank
])
def test_the_headline_is_the_metric_that_matters(metrics, expected):
    shown = headline(metrics)
    assert (shown["name"], shown["unit"]) == expected and shown["value"] == metrics[expected[0]]
    assert headline({}) is None


def test_last_metrics_reads_back_from_the_end_past_damage_and_an_unfinished_line(tmp_path):
    log = tmp_path / "train.jsonl"
    early = b'{"step": 1, "val": {"psnr": 20.0}}\n'
    filler = b"".join(b'{"step": %d, "loss": %d.5}\n' % (i, i) for i in range(2, 60_000))
    log.write_bytes(early + filler + b"garbage\n" + b'{"step": 60000, "loss": 0.1}\n' + b'{"step": 60001, "lo')
    assert len(filler) > TAIL_BUDGET  # the early validation value lies beyond what a row reads
    assert last_metrics(log) == {"loss": 0.1}
    log.write_bytes(early + filler[:filler.index(b"\n", 200_000) + 1] + b'{"step": 60000, "loss": 0.1, "x": NaN}\n')
    assert last_metrics(log) == {"loss": 0.1, "val.psnr": 20.0}  # found further back; NaN is no value
    assert last_metrics(tmp_path / "missing.jsonl") == {} and last_metrics(None) == {}


def test_runforge_runs_lists_the_tags(tmp_path, capsys):
    from runforge.cli import main

    write_annotations(make_run(tmp_path / "runs", "r", steps=2), ["baseline", "lr-sweep"], "a note")
    assert main(["runs", str(tmp_path / "runs")]) == 0
    table = capsys.readouterr().out
    assert "tags" in table and "baseline lr-sweep" in table
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["tags"], row["note"], row["headline"]["name"]) == (["baseline", "lr-sweep"], "a note", "loss")
