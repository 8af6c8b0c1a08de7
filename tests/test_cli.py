"""The command line: help, bad flags (exit 2, one line, no traceback), runs and show."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

import runforge

from runforge.cli import main
from runforge.config import ConfigError, build, load_file, markdown_table, option, to_dict

from conftest import run_cli


def _one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args, needles", [
    (["train", "toy", "--lrr", "1"], ["unrecognized arguments: --lrr"]),
    (["train", "toy", "--steps", "abc"], ["--steps", "expected an integer", "'abc'"]),
    (["train", "toy", "--lr", "1e-3x"], ["--lr", "expected a number"]),
    (["train", "toy", "--steps", "0"], ["--steps", "must be >= 1", "got 0"]),
    (["train", "nosuch"], ["unknown trainer 'nosuch'", "toy"]),
    (["train", "toy", "--preset", "huge"], ["--preset", "invalid choice"]),
    (["show", "no/such/run"], ["no/such/run", "not a run directory"]),
    (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    # bare --resume names the missing run, not the trainer's default dataset or required flags
    (["train", "toy", "--resume"], ["--resume needs a run directory"]),
    (["train", "splat", "--resume"], ["--resume needs a run directory"]),
    (["train", "kolmogorov", "--resume"], ["--resume needs a run directory"]),
])
def test_bad_input_exits_2_with_one_line(tmp_dir, args, needles):
    _one_line_error(run_cli(*args, cwd=tmp_dir), *needles)
    assert not (tmp_dir / "runs").exists()


def test_bad_config_file_names_the_file_and_the_key(tmp_dir):
    (tmp_dir / "bad.json").write_text('{"steps": 10,')
    _one_line_error(run_cli("train", "toy", "--config", "bad.json", cwd=tmp_dir), "bad.json", "not valid JSON")
    (tmp_dir / "unknown.json").write_text('{"stepz": 10}')
    _one_line_error(run_cli("train", "toy", "--config", "unknown.json", cwd=tmp_dir), "unknown.json", "stepz",
                    "did you mean --steps")
    assert not (tmp_dir / "runs").exists()


def test_debug_shows_the_traceback(tmp_dir):
    result = run_cli("train", "toy", "--steps", "abc", "--debug", cwd=tmp_dir)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_a_refused_start_leaves_the_existing_run_untouched(tmp_dir):
    assert run_cli("train", "toy", "--out", "r", "--preset", "tiny", cwd=tmp_dir).returncode == 0
    before = {p: p.read_bytes() for p in (tmp_dir / "r").rglob("*") if p.is_file()}
    _one_line_error(run_cli("train", "toy", "--out", "r", cwd=tmp_dir), "already holds a run", "--resume")
    assert {p: p.read_bytes() for p in (tmp_dir / "r").rglob("*") if p.is_file()} == before


def test_help_lists_commands_trainers_and_generated_flags(tmp_dir, capsys):
    top = run_cli("--help", cwd=tmp_dir)
    assert top.returncode == 0 and "train" in top.stdout and "runs" in top.stdout and "show" in top.stdout
    trainers = run_cli("train", "--help", cwd=tmp_dir)
    assert trainers.returncode == 0 and "toy" in trainers.stdout
    toy = run_cli("train", "toy", "--help", cwd=tmp_dir)
    assert toy.returncode == 0
    assert "--steps INT" in toy.stdout and "training steps (default: 300;" in toy.stdout
    assert "--resume [RUN_OR_CKPT]" in toy.stdout


def test_progress_off_prints_no_progress_line_and_lines_print_every_tenth(tmp_dir, capsys):
    assert main(["train", "toy", "--preset", "tiny", "--root", "runs", "--progress", "off"]) == 0
    assert "(100%)" not in capsys.readouterr().err
    with runforge.Run(trainer="unit", config={}, out=tmp_dir / "quiet", steps=10, tensorboard=False,
                      progress=False, handle_signals=False) as run:
        for step in range(1, 11):
            run.log(step, {"loss": 1.0})
            run.poll(step)
    assert "%)" not in capsys.readouterr().err


def test_train_runs_and_show_in_process(tmp_dir, capsys):
    assert main(["train", "toy", "--preset", "tiny", "--root", "runs", "--progress", "lines"]) == 0
    err = capsys.readouterr().err
    assert "step 40/40 (100%)" in err
    assert main(["runs", "runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 1 and runs[0]["status"] == "finished" and runs[0]["step"] == 40
    assert main(["show", runs[0]["dir"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["steps"] == 40 and shown["last_metrics"]["step"] == 40
    assert shown["images"] == 3 and shown["snapshots"] == ["stats_20.json", "stats_40.json"]
    # toy declares no snapshot vocabulary: the generic fields and its own, none of sr's
    assert shown["snapshot"]["validation_loss_value"] is not None and shown["snapshot"]["step_current"] == 40
    assert not [k for k in shown["snapshot"] if k.startswith(("adaptive_", "quality_")) or k == "layer_activity_map"]
    assert main(["show", runs[0]["dir"]]) == 0
    assert "plateau" not in capsys.readouterr().out.lower()


@dataclass
class Sample:
    steps: int = option(10, "steps")
    rate: float = option(0.5, "a rate")
    mode: Literal["sds", "photometric"] = option("sds", "guidance")
    export: bool = option(True, "export at the end")
    model_path: Optional[Path] = option(None, "weights")
    size: tuple[int, int] = option((64, 48), "grid size")
    tags: list[str] = option(["a"], "tags")


def test_config_types_convert_and_reject():
    cfg = build(Sample, None, {"steps": "5", "rate": "1e-2", "mode": "photometric", "export": False,
                               "model_path": "w/sd", "size": "32,16", "tags": "x,y"})
    assert (cfg.steps, cfg.rate, cfg.mode, cfg.export, cfg.model_path, cfg.size, cfg.tags) == \
        (5, 0.01, "photometric", False, Path("w/sd"), (32, 16), ["x", "y"])
    assert to_dict(cfg) == {"steps": 5, "rate": 0.01, "mode": "photometric", "export": False, "model_path": "w/sd",
                            "size": [32, 16], "tags": ["x", "y"]}
    assert build(Sample, None, {"model_path": "none"}).model_path is None
    for bad in ({"steps": "1.5"}, {"steps": True}, {"rate": "fast"}, {"mode": "clip"}, {"export": "maybe"},
                {"size": "1,2,3"}, {"nope": 1}):
        with pytest.raises(ConfigError):
            build(Sample, None, bad)


def test_a_saved_config_json_loads_back_to_the_same_config(tmp_path):
    cfg = build(Sample, None, {"steps": 7, "size": "8,8"})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(to_dict(cfg)))
    assert load_file(Sample, path) == cfg


def test_bool_flags_and_docs_table(tmp_dir):
    table = markdown_table(Sample)
    assert "| `--export / --no_export` | BOOL | `true` | export at the end |" in table
    assert "| `--mode` | {sds,photometric} | `\"sds\"` | guidance |" in table
