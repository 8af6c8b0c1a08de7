"""train.jsonl reading: an unfinished last line is skipped, a damaged middle line is an error."""

import json

import pytest

import runforge
from runforge.errors import BadInputError
from runforge.run.metrics import encode_line, plan_truncation


def test_unfinished_last_line_is_skipped(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"step": 1, "time": 0.1}\n{"step": 2, "time": 0.2}\n{"step": 3, "ti')
    assert [line["step"] for line in runforge.read_metrics(path)] == [1, 2]
    assert [line["step"] for line in runforge.read_metrics(tmp_path)] == [1, 2]


def test_a_damaged_line_in_the_middle_is_not_silently_skipped(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(b'{"step": 1}\n{"step": 2, "ti\n{"step": 3}\n')
    with pytest.raises(BadInputError, match=r"train.jsonl: line \d+ is not valid JSON"):
        runforge.read_metrics(tmp_path)


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
