"""Server-side downsampling and the incremental train.jsonl reader behind the charts."""

from __future__ import annotations

import json
import os

import numpy as np

from runforge.monitor.series import MetricStore, downsample


def test_downsample_keeps_every_bucket_extreme_and_the_ends():
    rng = np.random.default_rng(0)
    n = 1_000_000
    x = np.arange(n, dtype=np.float64)
    y = rng.normal(0.0, 1.0, n)
    y[123_457] = 50.0  # one spike among a million points
    y[900_001] = -50.0
    dx, dy = downsample(x, y, 2000)  # its time is bench/monitor_dashboard_load.py's, with the other figures
    assert len(dx) <= 2002 and np.all(np.diff(dx) > 0)
    assert dy.max() == 50.0 and dx[dy.argmax()] == 123_457
    assert dy.min() == -50.0 and dx[dy.argmin()] == 900_001
    assert dx[0] == 0 and dx[-1] == n - 1
    # every bucket's own extremes are present: the envelope is the same as the full data's
    size = int(np.ceil(n / 1000))
    for bucket in (0, 417, 999):
        part = y[bucket * size:(bucket + 1) * size]
        assert part.max() in dy and part.min() in dy


def test_downsample_leaves_short_series_alone_and_drops_non_finite():
    x = np.arange(6, dtype=np.float64)
    y = np.array([1.0, np.nan, 3.0, np.inf, 5.0, 6.0])
    dx, dy = downsample(x, y, 100)
    assert dx.tolist() == [0, 2, 4, 5] and dy.tolist() == [1.0, 3.0, 5.0, 6.0]
    for n in range(3, 40):  # bucket edges of every size: nothing lost, nothing out of range
        dx, dy = downsample(np.arange(n, dtype=float), np.arange(n, dtype=float) ** 2, 6)
        assert dx[0] == 0 and dx[-1] == n - 1 and len(dx) <= 8 and np.all(dy == dx ** 2)


def _append(path, records, tail=b""):
    with open(path, "ab") as f:
        f.write(b"".join(json.dumps(r).encode() + b"\n" for r in records) + tail)


def test_store_reads_only_what_was_appended_and_skips_a_partial_line(tmp_path):
    path = tmp_path / "train.jsonl"
    store = MetricStore(path)
    store.refresh()
    assert store.names() == [] and store.lines == 0
    _append(path, [{"step": 1, "time": 0.1, "loss": 1.0, "losses": {"l1": 0.5}, "note": "text"}],
            tail=b'{"step": 2, "loss"')  # the writer is mid-line
    store.refresh()
    assert store.names() == ["loss", "losses.l1"] and store.lines == 1
    with open(path, "ab") as f:
        f.write(b': 0.5}\n{"step": 3, "loss": null, "nonfinite": ["loss"]}\n')
    store.refresh()
    steps, values = store.series("loss")
    assert steps.tolist() == [1, 2, 3] and values[:2].tolist() == [1.0, 0.5] and np.isnan(values[2])
    assert store.chart("loss", 100)["y"] == [1.0, 0.5] and store.last_step == 3


def test_store_starts_over_when_the_file_is_replaced(tmp_path):
    path = tmp_path / "train.jsonl"
    _append(path, [{"step": s, "loss": float(s)} for s in range(1, 11)])
    store = MetricStore(path)
    store.refresh()
    assert store.lines == 10
    # a resume drops the lines after its checkpoint: the file is rewritten shorter, under a new inode
    tmp = tmp_path / "new.jsonl"
    _append(tmp, [{"step": s, "loss": -float(s)} for s in range(1, 5)])
    os.replace(tmp, path)
    store.refresh()
    steps, values = store.series("loss")
    assert steps.tolist() == [1, 2, 3, 4] and values.tolist() == [-1.0, -2.0, -3.0, -4.0]


def test_store_skips_a_damaged_line_in_the_middle_and_names_it(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"step": 1, "loss": 1.0}\n{"step": 2, "lo\n{"step": 3, "loss": 3.0}\n{"step": 4, "lo')
    store = MetricStore(path)
    store.refresh()
    assert store.series("loss")[0].tolist() == [1, 3]
    assert store.warnings == ["train.jsonl: line 2 is not valid JSON; skipped it"]  # the unfinished line 4: no word
    # another writer appends without finishing line 4, which becomes damaged; the numbers go on across reads
    _append(path, [{"step": 5, "loss": 5.0}, {"step": 6, "loss": 6.0}], tail=b"[7]\n")
    store.refresh()
    assert store.series("loss")[0].tolist() == [1, 3, 6]
    assert store.warnings == ["train.jsonl: skipped 3 damaged lines: 2 (not valid JSON), 4 (not valid JSON), "
                              "6 (not a JSON object)"]


def test_store_reads_the_same_records_and_damage_as_the_run_layer(tmp_path, monkeypatch):
    from runforge.monitor import series
    from runforge.run.metrics import scan_metrics

    monkeypatch.setattr(series, "PARSE_CHUNK_BYTES", 64)  # damaged lines in some pieces, not in others
    path = tmp_path / "train.jsonl"
    lines = [json.dumps({"step": s, "loss": s / 7}).encode() for s in range(1, 41)]
    for number in (3, 17, 18, 40):
        lines[number - 1] = lines[number - 1][:-4]
    lines[9], lines[29] = b"", b'"text"'
    path.write_bytes(b"\n".join(lines) + b"\n")
    records, damaged = scan_metrics(path)
    store = MetricStore(path)
    store.refresh()
    assert store.series("loss")[0].tolist() == [r["step"] for r in records] and store.lines == len(records)
    assert damaged == [(3, "not valid JSON"), (17, "not valid JSON"), (18, "not valid JSON"),
                       (30, "not a JSON object"), (40, "not valid JSON")]
    assert store.warnings == ["train.jsonl: skipped 5 damaged lines: 3 (not valid JSON), 17 (not valid JSON), "
                              "18 (not valid JSON), 30 (not a JSON object), 40 (not valid JSON)"]


def test_store_parses_a_big_append_in_pieces_without_losing_lines(tmp_path, monkeypatch):
    from runforge.monitor import series

    monkeypatch.setattr(series, "PARSE_CHUNK_BYTES", 64)  # many pieces, boundaries inside lines
    path = tmp_path / "train.jsonl"
    _append(path, [{"step": s, "loss": s / 7, "val": {"loss": s / 3}} for s in range(1, 501)])
    store = MetricStore(path)
    store.refresh()
    steps, values = store.series("loss")
    assert steps.tolist() == list(range(1, 501)) and np.allclose(values, np.arange(1, 501) / 7)
    assert store.series("val.loss")[0].tolist() == list(range(1, 501)) and store.lines == 500
