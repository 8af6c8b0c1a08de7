"""train.index, the columns the writer keeps beside train.jsonl: the dashboard's first chart reads them
instead of parsing the log, so they must be exactly what parsing gives, and ignored wherever they do not
agree with train.jsonl (a kill, a resume's rewrite, a damaged or foreign index)."""

from __future__ import annotations

import math
import os
import pickle
import random
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import PYTHON
from runforge.monitor.series import MetricStore
from runforge.run import Run
from runforge.run.metrics import INDEX_BLOCK_RECORDS, MetricsFile, MetricsIndex, cut_index, encode_line, scan_index

OPTS = dict(trainer="t", config={}, tensorboard=False, progress=False, handle_signals=False)


def _stores(run_dir):
    indexed = MetricStore(run_dir / "train.jsonl", run_dir / "train.index")
    parsed = MetricStore(run_dir / "train.jsonl")
    indexed.refresh()
    parsed.refresh()
    return indexed, parsed


def _assert_same(indexed, parsed):
    assert indexed.names() == parsed.names()
    assert (indexed.lines, indexed.last_step, indexed.warnings) == (parsed.lines, parsed.last_step, parsed.warnings)
    for name in parsed.names():
        (x1, y1), (x2, y2) = indexed.series(name), parsed.series(name)
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2, equal_nan=True), name


def _covered(run_dir):
    """The bytes of train.jsonl that train.index describes (what a reader need not parse)."""
    with open(run_dir / "train.jsonl", "rb") as log:
        blocks = scan_index((run_dir / "train.index").read_bytes(), log.fileno(), os.fstat(log.fileno()).st_size)
    return blocks[-1].header["end"] if blocks else 0


def _value(rng):
    kind = rng.random()
    if kind < 0.45:
        return rng.choice([rng.uniform(-1e3, 1e3), rng.random() * 1e-300, -0.0, 1e308 * 10, -1e308 * 10, math.nan])
    if kind < 0.6:
        return rng.choice([rng.randint(-5, 5), 2 ** 63 + 7, -(2 ** 70), 10 ** 400])
    if kind < 0.7:
        return rng.choice([None, True, False, "text", [1.0, math.nan], (2, 3)])
    if kind < 0.8:
        return rng.choice([np.float32(0.1), np.float64(0.3), np.int64(4), np.bool_(True), np.nan])
    if kind < 0.9:
        return {rng.choice(["a", "b", "c.d"]): _value(rng) for _ in range(rng.randint(0, 3))}
    return rng.uniform(0, 1)


def _random_log(rng, steps):
    """(step, metrics) pairs: mostly the same flat keys each step (the writer's fast path), sometimes anything."""
    calls = []
    shape = ["loss", "lr"]
    for step in range(1, steps + 1):
        if rng.random() < 0.02:
            shape = rng.sample(["loss", "lr", "psnr", "a.b", "val", "nonfinite", "x"], rng.randint(0, 4))
        if rng.random() < 0.85:
            metrics = {key: rng.uniform(-1, 1) for key in shape}
        else:
            metrics = {key: _value(rng) for key in shape + rng.sample(["a", "val", "nonfinite", "y"], 2)}
            if rng.random() < 0.1:
                metrics[7] = 1.0  # a key that is not a string
        calls.append((rng.choice([step, step, step, float(step), np.int64(step), True]) if rng.random() < 0.02
                      else step, metrics))
    return calls


def _write(path, calls, rng, index=True):
    """What Run does, in batches of random sizes (`_flush_records`), without its thread."""
    log = MetricsFile(path / "train.jsonl", path / "train.index" if index else None)
    at = 0
    while at < len(calls):
        size = rng.choice([1, 1, 3, 50, 700, 2048])
        batch = [(step, 0.5, metrics) for step, metrics in calls[at:at + size]]
        log.write_lines([encode_line({"step": s, "time": t, **m}) for s, t, m in batch], batch)
        at += size
    log.close()


@pytest.mark.parametrize("seed", range(12))
def test_the_index_holds_what_parsing_train_jsonl_gives(tmp_path, seed):
    rng = random.Random(seed)
    _write(tmp_path, _random_log(rng, rng.choice([1, 40, 3000, 9000])), rng)
    indexed, parsed = _stores(tmp_path)
    _assert_same(indexed, parsed)
    assert _covered(tmp_path) == (tmp_path / "train.jsonl").stat().st_size  # nothing left to parse


def test_a_run_writes_an_index_that_covers_its_log_in_few_blocks(tmp_path):
    with Run(out=tmp_path / "r", **OPTS) as run:
        for step in range(1, 20_001):
            run.log(step, {"loss": 1.0 / step, "val": {"psnr": 20.0, "bad": math.inf}} if step % 9 == 0 else
                    {"loss": 1.0 / step})
    run_dir = tmp_path / "r"
    indexed, parsed = _stores(run_dir)
    _assert_same(indexed, parsed)
    with open(run_dir / "train.jsonl", "rb") as log:
        blocks = scan_index((run_dir / "train.index").read_bytes(), log.fileno(), os.fstat(log.fileno()).st_size)
    assert blocks[-1].header["end"] == os.path.getsize(run_dir / "train.jsonl")
    assert len(blocks) <= 2 * 20_000 / INDEX_BLOCK_RECORDS + 2


def test_a_slow_logger_gets_one_growing_block_not_one_per_line(tmp_path):
    rng = random.Random(1)
    _write(tmp_path, [(step, {"loss": float(step)}) for step in range(1, 301)], rng)
    log = MetricsFile(tmp_path / "train.jsonl", tmp_path / "train.index")
    for step in range(301, 401):
        batch = [(step, 0.1, {"loss": float(step)})]
        log.write_lines([encode_line({"step": step, "time": 0.1, "loss": float(step)})], batch)
    log.close()
    with open(tmp_path / "train.jsonl", "rb") as f:
        blocks = scan_index((tmp_path / "train.index").read_bytes(), f.fileno(), os.fstat(f.fileno()).st_size)
    assert len(blocks) <= 3 and blocks[-1].header["records"] >= 100
    _assert_same(*_stores(tmp_path))


def _logged(tmp_path, steps=5000, seed=0):
    rng = random.Random(seed)
    _write(tmp_path, [(step, {"loss": 1.0 / step, "v": {"x": float(step % 13)}}) for step in range(1, steps + 1)], rng)
    return (tmp_path / "train.jsonl").read_bytes(), (tmp_path / "train.index").read_bytes()


def test_a_missing_or_garbage_index_means_parsing(tmp_path):
    log, index = _logged(tmp_path)
    (tmp_path / "train.index").unlink()
    _assert_same(*_stores(tmp_path))
    (tmp_path / "train.index").write_bytes(b"not an index at all" * 100)
    _assert_same(*_stores(tmp_path))
    (tmp_path / "train.index").unlink()
    (tmp_path / "train.index").mkdir()  # not a file: no index
    _assert_same(*_stores(tmp_path))


def test_a_damaged_block_ends_what_is_taken_from_the_index(tmp_path):
    log, index = _logged(tmp_path, steps=20_000)
    for where in (10, len(index) // 3, len(index) - 5):
        damaged = bytearray(index)
        damaged[where] ^= 0x55
        (tmp_path / "train.index").write_bytes(bytes(damaged))
        indexed, parsed = _stores(tmp_path)
        _assert_same(indexed, parsed)
    (tmp_path / "train.index").write_bytes(index[:len(index) // 2])  # torn: a kill while a block was written
    _assert_same(*_stores(tmp_path))


def test_an_index_ahead_of_train_jsonl_is_ignored_past_the_log(tmp_path):
    log, index = _logged(tmp_path, steps=20_000)
    for cut in (len(log) // 2, len(log) - 3, log.rfind(b"\n", 0, len(log) - 1) + 1):
        (tmp_path / "train.jsonl").write_bytes(log[:cut])  # the log lost lines the index describes
        indexed, parsed = _stores(tmp_path)
        _assert_same(indexed, parsed)
        assert _covered(tmp_path) <= cut


def test_an_index_of_another_log_is_not_taken(tmp_path):
    log, index = _logged(tmp_path, steps=3000)
    # same shape, same length, other values in the middle of blocks: what a rewrite by a tool (a new
    # file renamed into place, as editors and the resume do) could leave; every block is checked whole
    other = log.replace(b'"v":{"x":1.0}', b'"v":{"x":9.0}')
    assert len(other) == len(log) and other != log
    (tmp_path / "other").write_bytes(other)
    os.replace(tmp_path / "other", tmp_path / "train.jsonl")
    indexed, parsed = _stores(tmp_path)
    _assert_same(indexed, parsed)
    assert parsed.series("v.x")[1].max() == 12.0 and 9.0 in parsed.series("v.x")[1]


def test_a_copied_run_keeps_the_use_of_its_index(tmp_path):
    import shutil

    (tmp_path / "a").mkdir()
    log, index = _logged(tmp_path / "a", steps=6000)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # another inode: every block is checked against its bytes
    indexed, parsed = _stores(tmp_path / "b")
    _assert_same(indexed, parsed)
    assert _covered(tmp_path / "b") == len(log)


def test_the_store_parses_only_what_the_index_does_not_cover_and_follows_appends(tmp_path):
    _logged(tmp_path, steps=9000)
    with open(tmp_path / "train.jsonl", "ab") as f:  # lines a killed writer appended before their block
        f.write(b'{"step":9001,"time":1.0,"loss":7.0}\n{"step":9002,"time":1.0,"loss":8.0}\n')
    indexed, parsed = _stores(tmp_path)
    _assert_same(indexed, parsed)
    assert indexed.series("loss")[1][-1] == 8.0
    with open(tmp_path / "train.jsonl", "ab") as f:
        f.write(b'{"step":9003,"time":1.0,"loss":9.0}\nnot json\n{"step":9004,"time":1.0,"loss":1')
    indexed.refresh()
    parsed.refresh()
    _assert_same(indexed, parsed)
    assert indexed.warnings and indexed.warnings == parsed.warnings  # line numbers go on from the index's


def test_reopening_repairs_the_index_and_describes_lines_it_missed(tmp_path):
    log, index = _logged(tmp_path, steps=9000)
    with open(tmp_path / "train.jsonl", "ab") as f:
        f.write(b'{"step":9001,"time":1.0,"loss":7.0}\n')
    (tmp_path / "train.index").write_bytes(index[:len(index) - 100])  # torn last block, behind the log
    rng = random.Random(3)
    _write(tmp_path, [(step, {"loss": float(step)}) for step in range(9002, 12_000)], rng)
    _assert_same(*_stores(tmp_path))
    assert _covered(tmp_path) == (tmp_path / "train.jsonl").stat().st_size


def test_an_index_with_damaged_lines_to_describe_is_abandoned(tmp_path):
    _logged(tmp_path, steps=100)
    with open(tmp_path / "train.jsonl", "ab") as f:
        f.write(b"not json\n")
    with pytest.raises(ValueError):
        MetricsIndex(tmp_path / "train.index", tmp_path / "train.jsonl", (tmp_path / "train.jsonl").stat().st_size)
    log = MetricsFile(tmp_path / "train.jsonl", tmp_path / "train.index")  # the run goes on without one
    log.write_lines([b'{"step":101,"time":0.0,"loss":1.0}'], [(101, 0.0, {"loss": 1.0})])
    log.close()
    _assert_same(*_stores(tmp_path))


def _resume_scenario(tmp_path):
    out = tmp_path / "r"
    with Run(out=out, **OPTS) as run:
        for step in range(1, 12_001):
            run.log(step, {"loss": 1.0 / step})
            if step == 9000:
                run.checkpoint(step, {"step": step}, pickle.dump)
    return out


def test_resume_truncation_keeps_the_index_true(tmp_path):
    out = _resume_scenario(tmp_path)
    with Run(out=out, resume=True, **OPTS) as run:
        assert run.start_step == 9000
        for step in range(9001, 10_001):
            run.log(step, {"loss": -float(step)})  # other values at steps the old index described
    indexed, parsed = _stores(out)
    _assert_same(indexed, parsed)
    assert parsed.series("loss")[1][-1] == -10_000.0 and parsed.lines == 10_000
    assert _covered(out) == (out / "train.jsonl").stat().st_size


def test_a_kill_at_either_side_of_the_resume_rewrite_leaves_no_wrong_columns(tmp_path):
    from runforge.run.metrics import plan_truncation

    out = _resume_scenario(tmp_path)
    log, index = (out / "train.jsonl").read_bytes(), (out / "train.index").read_bytes()
    plan = plan_truncation(out / "train.jsonl", 9000)
    assert 0 < plan.intact < len(log)
    # killed after the index was cut, before train.jsonl was rewritten: the index fits both
    cut_index(out / "train.index", plan.intact)
    _assert_same(*_stores(out))
    assert 0 < _covered(out) <= plan.intact
    # the rewrite done and new lines appended, but the old index still whole (written by a run that did
    # not cut it): its blocks past the kept lines no longer agree with the log
    (out / "train.index").write_bytes(index)
    kept = log[:plan.intact] + b"".join(
        encode_line({"step": s, "time": 0.5, "loss": -1.0}) + b"\n" for s in range(9001, 12_001))
    (out / "train.jsonl").write_bytes(kept)
    indexed, parsed = _stores(out)
    _assert_same(indexed, parsed)
    assert indexed.series("loss")[1][-1] == -1.0


KILLED_WRITER = """
import sys, runforge
with runforge.Run(trainer="t", config={}, out=sys.argv[1], tensorboard=False, progress=False) as run:
    step = 0
    while True:
        step += 1
        run.log(step, {"loss": 1.0 / step, "val": {"x": float(step % 7)}} if step % 3 else {"loss": 2.0})
"""


def _has_a_line(path):
    try:
        with open(path, "rb") as f:
            return b"\n" in f.read(4096)
    except FileNotFoundError:
        return False


def test_kill_9_at_random_instants_never_makes_the_index_disagree(tmp_path):
    rng = random.Random(7)
    for attempt in range(4):
        out = tmp_path / f"k{attempt}"
        proc = subprocess.Popen([PYTHON, "-c", KILLED_WRITER, str(out)], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        # the random instant starts once a line is on disk: a kill before the first write checks nothing
        while not _has_a_line(out / "train.jsonl") and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        indexed, parsed = _stores(out)
        _assert_same(indexed, parsed)
        assert parsed.lines > 0


def test_the_dashboard_reads_no_index_that_links_out_of_the_run(tmp_path):
    from runforge.monitor.catalog import Catalog

    root = tmp_path / "runs"
    with Run(out=root / "r", **OPTS) as run:
        for step in range(1, 101):
            run.log(step, {"loss": float(step)})
    catalog = Catalog([root])
    assert catalog.store(catalog.get("r")).index is not None
    outside = tmp_path / "elsewhere.index"
    os.replace(root / "r" / "train.index", outside)
    (root / "r" / "train.index").symlink_to(outside)
    catalog = Catalog([root])
    store = catalog.store(catalog.get("r"))
    assert store.index is None and store.series("loss")[1][-1] == 100.0
