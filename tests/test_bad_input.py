"""Every bad input to the core commands: one stderr line naming the flag or file, exit 2, nothing on disk
created or changed (a run given to --resume stays byte-for-byte as it was)."""

import json
import os
import pickle
import shutil

import pytest

from conftest import make_unwritable, run_cli, tree_digest

TINY = ["train", "toy", "--preset", "tiny", "--no_tensorboard", "--progress", "lines"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("base")
    result = run_cli(*TINY, "--out", base / "run", cwd=base)
    assert result.returncode == 0, result.stderr
    return base / "run"


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def _latest_checkpoint(run):
    index = json.loads((run / "ckpts" / "index_rank0.json").read_text())
    return run / "ckpts" / index["checkpoints"][-1]["file"]


# (id, how to prepare the case in `work` (holding a copy of a finished tiny run in work/run),
#  the arguments, the words the one stderr line must hold)
CASES = [
    ("config-is-a-dir", lambda w: (w / "cfgdir").mkdir(), ["--config", "cfgdir"], ["cfgdir", "is a directory"]),
    ("config-missing", lambda w: None, ["--config", "nope.json"], ["nope.json", "no such config file"]),
    ("config-deep", lambda w: _write(w / "c.json", "[" * 100000 + "]" * 100000), ["--config", "c.json"],
     ["c.json", "nests too deeply"]),
    ("config-string-number", lambda w: _write(w / "c.json", '{"steps": "5"}'), ["--config", "c.json"],
     ["c.json", "key steps", "string"]),
    ("config-nan", lambda w: _write(w / "c.json", '{"lr": NaN}'), ["--config", "c.json"], ["c.json", "lr", "finite"]),
    ("config-huge", lambda w: _write(w / "c.json", '{"lr": 1e400}'), ["--config", "c.json"], ["c.json", "lr", "finite"]),
    ("config-not-utf8", lambda w: _write(w / "c.json", b'{"steps": "\xff"}'), ["--config", "c.json"],
     ["c.json", "not valid JSON"]),
    ("config-array", lambda w: _write(w / "c.json", "[1, 2]"), ["--config", "c.json"], ["c.json", "JSON object"]),
    ("config-unknown-key", lambda w: _write(w / "c.json", '{"stepz": 5}'), ["--config", "c.json"],
     ["c.json", "stepz", "unknown"]),
    ("config-bool-for-int", lambda w: _write(w / "c.json", '{"steps": true}'), ["--config", "c.json"],
     ["c.json", "steps", "integer"]),
    ("name-path", lambda w: None, ["--name", "../../escaped"], ["--name", "plain name"]),
    ("name-hidden", lambda w: None, ["--name", ".hidden"], ["--name", "plain name"]),
    ("name-slash", lambda w: None, ["--name", "a/b"], ["--name", "plain name"]),
    ("keep-last-negative", lambda w: None, ["--keep_last", "-1"], ["--keep_last", ">= 0"]),
    ("lr-huge", lambda w: None, ["--lr", "1e308"], ["--lr", "<= 10"]),
    ("lr-inf", lambda w: None, ["--lr", "inf"], ["--lr", "finite"]),
    ("lr-nan", lambda w: None, ["--lr", "nan"], ["--lr", "finite"]),
    ("lr-zero", lambda w: None, ["--lr", "0"], ["--lr", "> 0"]),
    ("step-sleep-negative", lambda w: None, ["--step_sleep", "-1"], ["--step_sleep", ">= 0"]),
    ("steps-float", lambda w: None, ["--steps", "1e20"], ["--steps", "integer"]),
    ("steps-zero", lambda w: None, ["--steps", "0"], ["--steps", ">= 1"]),
    ("batch-huge", lambda w: None, ["--batch_size", "100000000"], ["--batch_size", "<="]),
    ("out-is-a-file", lambda w: _write(w / "afile", "x"), ["--out", "afile"], ["afile", "is a file"]),
    ("out-not-empty", lambda w: _write(w / "full" / "x", "x"), ["--out", "full"], ["full", "not empty"]),
    ("out-holds-a-run", lambda w: None, ["--out", "run"], ["run", "already holds a run"]),
    ("root-is-a-file", lambda w: _write(w / "rootfile", "x"), ["--root", "rootfile"], ["rootfile", "not a directory"]),
    ("root-unwritable", lambda w: make_unwritable(w / "locked"), ["--root", "locked"], ["locked", "cannot"]),
    ("out-unwritable", lambda w: make_unwritable(w / "locked"), ["--out", "locked/run"], ["locked/run", "cannot"]),
    ("resume-nothing-there", lambda w: None, ["--resume", "nowhere"], ["nowhere", "no such run"]),
    ("resume-index-not-json", lambda w: _write(w / "run" / "ckpts" / "index_rank0.json", "{not json"),
     ["--resume", "run"], ["index_rank0.json", "not valid JSON"]),
    ("resume-index-wrong-shape", lambda w: _write(w / "run" / "ckpts" / "index_rank0.json", '{"checkpoints": 5}'),
     ["--resume", "run"], ["index_rank0.json", "checkpoints"]),
    ("resume-index-escapes", lambda w: _write(w / "run" / "ckpts" / "index_rank0.json",
                                              '{"checkpoints": [{"step": 5, "file": "../../etc/passwd"}]}'),
     ["--resume", "run"], ["index_rank0.json", "leaves the checkpoint folder"]),
    ("resume-checkpoint-truncated",
     lambda w: _write(_latest_checkpoint(w / "run"), _latest_checkpoint(w / "run").read_bytes()[:40]),
     ["--resume", "run"], ["ckpt_", "cannot be loaded"]),
    ("resume-checkpoint-random-bytes", lambda w: _write(_latest_checkpoint(w / "run"), os.urandom(3000)),
     ["--resume", "run"], ["ckpt_", "cannot be loaded"]),
    ("resume-checkpoint-empty", lambda w: _write(_latest_checkpoint(w / "run"), b""),
     ["--resume", "run"], ["ckpt_", "cannot be loaded"]),
    ("resume-checkpoint-wrong-keys", lambda w: _write(_latest_checkpoint(w / "run"), pickle.dumps({"weights": [1]})),
     ["--resume", "run"], ["ckpt_", "not a toy checkpoint"]),
    ("resume-checkpoint-wrong-params",
     lambda w: _write(_latest_checkpoint(w / "run"), pickle.dumps({"params": {"a": "x"}, "best": 1.0, "rng": None})),
     ["--resume", "run"], ["ckpt_", "params"]),
    ("resume-unlisted-checkpoint", lambda w: _write(w / "run" / "ckpts" / "mine.pkl", b"x"),
     ["--resume", "run/ckpts/mine.pkl"], ["mine.pkl", "not a checkpoint listed"]),
    ("resume-log-damaged", lambda w: _write(w / "run" / "train.jsonl",
                                            b'{"step": 1}\n{"step": 2, "lo\n' + (w / "run" / "train.jsonl").read_bytes()),
     ["--resume", "run"], ["train.jsonl", "line 2", "not valid JSON"]),
    ("resume-run-json-damaged", lambda w: _write(w / "run" / "run.json", "{"), ["--resume", "run"],
     ["run.json", "not valid JSON"]),
    ("resume-config-json-damaged", lambda w: _write(w / "run" / "config.json", '{"steps": "many"}'),
     ["--resume", "run"], ["config.json", "steps"]),
    ("resume-other-out", lambda w: (w / "other").mkdir(), ["--resume", "run", "--out", "other"],
     ["run", "not to --out other"]),
]


@pytest.mark.parametrize("prepare, args, needles", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_train_refuses_bad_input_in_one_line_and_changes_nothing(tmp_path, finished_run, prepare, args, needles):
    shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    prepare(tmp_path)
    before = tree_digest(tmp_path)
    result = run_cli(*TINY, *args, cwd=tmp_path)
    _assert_one_line(result, needles)
    assert tree_digest(tmp_path) == before


SHOW_CASES = [
    ("snapshot-malformed", lambda w: _write(w / "run" / "stats" / "stats_40.json", '{"a": 1'), ["show", "run"],
     ["stats_40.json", "not valid JSON"]),
    ("snapshot-not-object", lambda w: _write(w / "run" / "stats" / "stats_40.json", "[]"), ["show", "run"],
     ["stats_40.json", "JSON object"]),
    ("snapshot-step-missing", lambda w: None, ["show", "run", "--step", "7"], ["no statistics snapshot at step 7"]),
    ("not-a-run", lambda w: (w / "empty").mkdir(), ["show", "empty"], ["empty", "not a run directory"]),
]


@pytest.mark.parametrize("prepare, args, needles", [case[1:] for case in SHOW_CASES], ids=[case[0] for case in SHOW_CASES])
def test_show_names_the_damaged_file_and_changes_nothing(tmp_path, finished_run, prepare, args, needles):
    shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    prepare(tmp_path)
    before = tree_digest(tmp_path)
    result = run_cli(*args, cwd=tmp_path)
    _assert_one_line(result, needles)
    assert tree_digest(tmp_path) == before


def _assert_one_line(result, needles):
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
