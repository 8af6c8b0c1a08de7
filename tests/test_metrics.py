"""train.jsonl reading: an unfinished last line is skipped silently, a damaged line is skipped with a
warning naming it; planning a resume refuses a damaged line instead, since it rewrites the file."""

import json
import math

import pytest

import runforge
from runforge.errors import BadInputError
from runforge.run.metrics import DamagedLogWarning, damage_message, encode_line, plan_truncation, scan_metrics


def test_unfinished_last_line_is_skipped(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"step": 1, "time": 0.1}\n{"step": 2, "time": 0.2}\n{"step": 3, "ti')
    assert [line["step"] for line in runforge.read_metrics(path)] == [1, 2]
    assert [line["step"] for line in runforge.read_metrics(tmp_path)] == [1, 2]


def test_a_damaged_line_in_the_middle_is_skipped_with_a_warning_naming_it(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(b'{"step": 1}\n{"step": 2, "ti\n{"step": 3}\n')
    with pytest.warns(DamagedLogWarning) as caught:
        records = runforge.read_metrics(tmp_path)
    assert [line["step"] for line in records] == [1, 3]
    assert [str(w.message) for w in caught] == [f"{tmp_path / 'train.jsonl'}: line 2 is not valid JSON; skipped it"]


def test_scan_names_every_damaged_line_by_its_number_in_the_file(tmp_path):
    path = tmp_path / "train.jsonl"
    # blank lines count, as in an editor; a complete last line without its newline is read
    path.write_bytes(b'{"step": 1}\n\n[1, 2]\n{"step": 4, "x": NaN}\n\xff\xfe\n{"step": 6}')
    records, damaged = scan_metrics(path)
    assert [line["step"] for line in records] == [1, 4, 6] and math.isnan(records[1]["x"])
    assert damaged == [(3, "not a JSON object"), (5, "not valid JSON")]
    path.write_bytes(b'{"step": 1}\n[1, 2]')  # complete, so not a line cut short: damaged
    assert scan_metrics(path) == ([{"step": 1}], [(2, "not a JSON object")])


def test_a_log_of_many_damaged_lines_gives_one_line_that_counts_the_rest():
    message = damage_message("run/train.jsonl", [(n, "not valid JSON") for n in range(10, 22)])
    assert "\n" not in message and message.startswith("run/train.jsonl: skipped 12 damaged lines: 10 (not valid JSON), ")
    assert message.endswith("14 (not valid JSON) and 7 more")


def test_planning_a_resume_refuses_a_damaged_line_and_changes_nothing(tmp_path):
    path = tmp_path / "train.jsonl"
    data = b'{"step": 1}\n{"step": 2, "ti\n{"step": 3}\n{"st'
    path.write_bytes(data)
    with pytest.raises(BadInputError, match=r"train.jsonl: line 2 is not valid JSON; .*mend or delete that line"):
        plan_truncation(path, 1)
    assert path.read_bytes() == data
    path.write_bytes(b'{"step": 1}\n"text"\n')
    with pytest.raises(BadInputError, match=r"line 2 is not a JSON object"):
        plan_truncation(path, 1)
    path.write_bytes(b'{"step": 1}\n{"st\n  ')  # ended by a newline, so finished, and damaged
    with pytest.raises(BadInputError, match=r"line 2 is not valid JSON"):
        plan_truncation(path, 1)


def test_truncate_after_keeps_steps_up_to_the_checkpoint_and_returns_the_clock(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(encode_line({"step": s, "time": s / 10}) + b"\n" for s in range(1, 11)) + b'{"st')
    plan = plan_truncation(path, 6)
    assert plan.dropped == 5 and plan.last_time == 0.6
    assert path.read_bytes().endswith(b'{"st')  # planning reads only
    plan.apply()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_numpy_scalars_and_non_string_keys_are_encoded():
    np = pytest.importorskip("numpy")
    line = json.loads(encode_line({"step": 1, "a": np.float32(0.5), "b": np.int64(3), "c": {1: 2.0}}))
    assert line == {"step": 1, "a": 0.5, "b": 3, "c": {"1": 2.0}}


def test_torch_scalars_and_tensors_are_encoded_and_nonfinite_listed():
    torch = pytest.importorskip("torch")
    line = json.loads(encode_line({"step": 1, "a": torch.tensor(0.5), "b": torch.tensor(float("inf")),
                                   "c": torch.ones(2)}))
    assert line == {"step": 1, "a": 0.5, "b": None, "c": [1.0, 1.0], "nonfinite": ["b"]}


def test_the_fast_long_integer_check_answers_as_the_pattern_does():
    import random

    from runforge.run.metrics import _LONG_INTEGER, _may_hold_long_integer

    rng = random.Random(0)
    for _ in range(5000):
        data = bytes(rng.randrange(256) if rng.random() < 0.2 else rng.choice(b"0123456789")
                     for _ in range(rng.randint(0, 40)))
        assert _may_hold_long_integer(data) == bool(_LONG_INTEGER.search(data)), data
    for text in (b'{"a":12345678901234567890}', b'{"a":[1, -12345678901234567890]}', b'{"a":0.12345678901234567890}',
                 b'{"a":1e12345678901234567890}', b'{"a":"12345678901234567890"}'):
        assert _may_hold_long_integer(text) == bool(_LONG_INTEGER.search(text)), text


def test_a_64_bit_overflowing_integer_reads_back_exactly_in_a_big_log(tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [encode_line({"step": i, "loss": 1.0 / (i + 1)}) for i in range(3000)]
    lines[1234] = encode_line({"step": 1234, "count": 2**70 + 1})
    path.write_bytes(b"\n".join(lines) + b"\n")
    records = runforge.read_metrics(path)
    assert len(records) == 3000 and records[1234]["count"] == 2**70 + 1


def test_reading_leaves_the_garbage_collector_as_it_was(tmp_path):
    import gc

    path = tmp_path / "train.jsonl"
    path.write_bytes(b"".join(encode_line({"step": i, "x": {"y": i}}) + b"\n" for i in range(100)))
    assert gc.isenabled()
    assert len(runforge.read_metrics(path)) == 100 and gc.isenabled()
    gc.disable()
    try:
        assert len(runforge.read_metrics(path)) == 100 and not gc.isenabled()
    finally:
        gc.enable()
