"""Any document a user (or a damaged disk) can put where runforge reads either loads or raises the
project's own error: config files, train.jsonl, statistics snapshots, the checkpoint index."""

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runforge.config import build, load_file, option
from runforge.errors import RunforgeError
from runforge.run.checkpoints import CheckpointManager
from runforge.run.metrics import DamagedLogWarning, plan_truncation, read_metrics, scan_metrics
from runforge.run.snapshots import load_snapshot
from runforge.trainers.toy.config import Config as ToyConfig

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=20)


def _json_text(value):
    return json.dumps(value)


# Raw texts: valid JSON of any shape, JSON with NaN/Infinity, deep nesting, bytes that are not UTF-8.
raw_documents = st.one_of(
    json_values.map(_json_text),
    st.sampled_from(["NaN", '{"steps": Infinity}', '{"lr": -Infinity}', '{"steps": 1e999}', "", "{", "[" * 5000,
                     '{"a": ' * 3000 + "1" + "}" * 3000]),
    st.binary(max_size=64).map(lambda b: b.decode("latin-1")),
)


@dataclass
class Everything:
    count: int = option(3, "an integer", ge=0, le=100)
    rate: float = option(0.5, "a number", gt=0, le=1)
    name: str = option("x", "a string")
    path: Path = option(Path("p"), "a path")
    flag: bool = option(False, "a switch")
    mode: Literal["a", "b"] = option("a", "a choice")
    maybe: Optional[int] = option(None, "an optional integer")
    sizes: tuple[int, ...] = option((1, 2), "integers", ge=1)


def _config_document(draw_values):
    keys = ["count", "rate", "name", "path", "flag", "mode", "maybe", "sizes", "unknown"]
    return st.dictionaries(st.sampled_from(keys), draw_values, max_size=5)


@SETTINGS
@given(st.one_of(raw_documents, _config_document(json_values).map(_json_text),
                 _config_document(scalars).map(_json_text)))
def test_config_files_load_or_raise_a_config_error(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    for cls in (Everything, ToyConfig):
        try:
            cfg = load_file(cls, path)
        except RunforgeError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            continue
        # what loads is typed and in range: the trainer never sees a string for a number
        if cls is Everything:
            assert isinstance(cfg.count, int) and not isinstance(cfg.count, bool) and 0 <= cfg.count <= 100
            assert isinstance(cfg.rate, float) and 0 < cfg.rate <= 1
            assert all(isinstance(s, int) and s >= 1 for s in cfg.sizes)
        else:
            assert all(math.isfinite(v) for v in (cfg.lr, cfg.noise, cfg.step_sleep))


@SETTINGS
@given(st.dictionaries(st.sampled_from(["count", "rate", "sizes", "maybe", "flag"]),
                       st.text(max_size=12), max_size=3))
def test_command_line_strings_convert_or_raise_a_config_error(overrides):
    try:
        cfg = build(Everything, None, overrides)
    except RunforgeError:
        return
    assert 0 <= cfg.count <= 100 and 0 < cfg.rate <= 1 and math.isfinite(cfg.rate)


lines = st.one_of(json_values.map(_json_text), st.sampled_from(['{"step": 1, "ti', "NaN", "[1, 2]", "\x00\xff"]),
                  st.builds(lambda step, loss: json.dumps({"step": step, "time": 0.1, "loss": loss}),
                            st.integers(min_value=-5, max_value=50), st.floats(allow_nan=False, allow_infinity=False)))


def _reference_read(data):
    """The reading rule, one line at a time with the json module: what the fast path must agree with."""
    records, damaged = [], []
    parts = data.split(b"\n")
    for number, line in enumerate(parts, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            if number < len(parts):  # the text after the last newline is a line not yet finished
                damaged.append((number, "not valid JSON"))
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            damaged.append((number, "not a JSON object"))
    return records, damaged


def _same(a, b):
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN == NaN here


@SETTINGS
@given(st.lists(lines, max_size=8), st.booleans(), st.integers(min_value=0, max_value=40))
def test_train_jsonl_reads_by_the_rule_and_planning_a_resume_never_writes(tmp_path, body, trailing_newline, step):
    path = tmp_path / "train.jsonl"
    data = ("\n".join(body) + ("\n" if trailing_newline else "")).encode("utf-8", "surrogatepass")
    path.write_bytes(data)
    records, damaged = scan_metrics(path)
    expected_records, expected_damaged = _reference_read(data)
    assert _same(records, expected_records) and damaged == expected_damaged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _same(read_metrics(path), records)
    if damaged:  # one warning, on one line, naming the file and the first damaged line
        [warning] = caught
        message = str(warning.message)
        assert issubclass(warning.category, DamagedLogWarning) and "\n" not in message
        assert message.startswith(f"{path}: ") and re.search(rf"\b{damaged[0][0]}\b", message[len(str(path)):])
    else:
        assert caught == []
    try:
        plan = plan_truncation(path, step)
    except RunforgeError as exc:
        assert damaged and str(path) in str(exc) and f"line {damaged[0][0]} " in str(exc)
    else:  # only a log without damaged lines is planned: the rewrite keeps every line up to `step`
        assert not damaged and all(isinstance(line, bytes) for line in plan.kept) and plan.dropped >= 0
        kept = [json.loads(line) for line in plan.kept]
        assert _same(kept, [r for r in records if not (isinstance(r.get("step"), int) and r["step"] > step)])
    assert path.read_bytes() == data


@SETTINGS
@given(raw_documents)
def test_snapshots_load_as_objects_or_raise(tmp_path, text):
    path = tmp_path / "stats_10.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        snapshot = load_snapshot(path)
    except RunforgeError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(snapshot, dict)


entries = st.one_of(
    json_values,
    st.fixed_dictionaries({"step": st.one_of(st.integers(min_value=-3, max_value=99), st.booleans(), st.text(max_size=3)),
                           "file": st.one_of(st.sampled_from(["ckpt_5_rank0.pt", "../escape.pt", "/abs.pt", ""]),
                                             st.integers())},
                          optional={"metric": st.one_of(st.floats(), st.none(), st.text(max_size=2)),
                                    "staged": st.sampled_from([".ckpt_5_rank0.pt.x.tmp", "../x", None])}),
)
indexes = st.one_of(raw_documents, st.fixed_dictionaries({"checkpoints": st.lists(entries, max_size=4)}).map(_json_text),
                    st.fixed_dictionaries({"checkpoints": json_values}).map(_json_text))


@SETTINGS
@given(indexes)
def test_checkpoint_index_lists_valid_entries_or_raises_naming_the_index(tmp_path, text):
    run_dir = tmp_path / "run"
    (run_dir / "ckpts").mkdir(parents=True, exist_ok=True)
    index = run_dir / "ckpts" / "index_rank0.json"
    index.write_text(text, encoding="utf-8", errors="surrogatepass")
    manager = CheckpointManager(run_dir)
    try:
        listed = manager.entries()
        latest = manager.latest()
        manager.best()
    except RunforgeError as exc:
        assert str(index) in str(exc)
        return
    for entry in listed:
        assert isinstance(entry["step"], int) and entry["step"] >= 0
        assert not Path(entry["file"]).is_absolute() and ".." not in Path(entry["file"]).parts
    if latest is not None:
        assert latest.path.resolve().is_relative_to((run_dir / "ckpts").resolve())
