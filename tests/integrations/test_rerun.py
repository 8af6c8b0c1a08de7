"""`runforge rerun RUN`: a new run from RUN's config.json with flags on top, `rerun_of` and `git` in its
run.json, a warning when the code may differ, one-line refusals that write nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runforge.cli import main
from runforge.run.opening import git_state

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **GIT_ENV})


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A throwaway git repository with one commit, as the working directory (runs/ untracked inside it)."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q")
    (work / "train.py").write_text("# the user's code\n")
    git(work, "add", "train.py")
    git(work, "commit", "-q", "-m", "one")
    monkeypatch.chdir(work)
    return work


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source_run(repo: Path) -> Path:
    assert main(["train", "toy", "--preset", "tiny", "--lr", "0.02", "--root", "runs", "--name", "orig",
                 "--progress", "lines"]) == 0
    (run,) = (repo / "runs").iterdir()
    return run


def new_runs(root: Path, old: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir() and p != old]


def test_rerun_reproduces_the_config_with_an_override_and_records_where_it_came_from(repo, capsys):
    run = source_run(repo)
    info = read(run / "run.json")
    assert info["git"] == {"commit": git_state()["commit"], "dirty": False} and info["git_commit"] == info["git"]["commit"]
    capsys.readouterr()
    assert main(["rerun", str(run), "--steps", "20", "--progress", "lines"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err  # same commit, clean tree
    (new,) = new_runs(repo / "runs", run)  # beside the source run
    assert new.name.startswith("orig-rerun_")
    old_config, new_config = read(run / "config.json"), read(new / "config.json")
    assert new_config == {**old_config, "steps": 20} and new_config["lr"] == 0.02
    new_info = read(new / "run.json")
    assert new_info["status"] == "finished" and new_info["step"] == 20 and new_info["trainer"] == "toy"
    assert new_info["rerun_of"] == {"dir": str(run.resolve()), "id": info["id"], "name": "orig",
                                    "overrides": {"steps": "20"}, "git": info["git"]}
    assert new_info["git"] == info["git"]
    assert "rerun of" in (new / "events.log").read_text()


def test_rerun_warns_in_one_line_when_the_commit_differs_or_the_tree_is_dirty(repo, capsys, tmp_path):
    run = source_run(repo)
    info = read(run / "run.json")
    info["git"] = {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}
    (run / "run.json").write_text(json.dumps(info))
    capsys.readouterr()
    assert main(["rerun", str(run), "--out", str(tmp_path / "again"), "--progress", "lines"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("runforge: warning: ")
    assert "commit 0123456789ab" in warnings[0] and git_state()["commit"][:12] in warnings[0]
    assert read(tmp_path / "again" / "run.json")["rerun_of"]["git"]["commit"].startswith("0123456789")

    (repo / "train.py").write_text("# changed\n")  # uncommitted change, same commit as the (restored) source
    info["git"] = git_state() | {"dirty": False}
    (run / "run.json").write_text(json.dumps(info))
    assert main(["rerun", str(run), "--root", str(tmp_path / "elsewhere"), "--progress", "lines"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert warnings == ["runforge: warning: the working tree has uncommitted changes"]
    assert len(list((tmp_path / "elsewhere").iterdir())) == 1


def test_a_run_outside_a_git_repository_records_git_as_null(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "toy", "--preset", "tiny", "--steps", "5", "--out", "r", "--progress", "lines"]) == 0
    info = read(tmp_path / "r" / "run.json")
    assert info["git"] is None and info["git_commit"] is None


def bad_cases(run: Path, tmp: Path):
    (tmp / "notarun").mkdir()
    damaged = tmp / "damaged"
    damaged.mkdir()
    for name in ("run.json", "config.json"):
        (damaged / name).write_bytes((run / name).read_bytes())
    (damaged / "config.json").write_text('{"lr": "fast"}')
    script = tmp / "script"
    script.mkdir()
    (script / "run.json").write_text(json.dumps({**read(run / "run.json"), "trainer": "script"}))
    (script / "config.json").write_text("{}")
    return [
        (["rerun", str(tmp / "nowhere")], "nowhere: not a run directory"),
        (["rerun", str(tmp / "notarun")], "notarun: not a run (run.json is missing)"),
        (["rerun", str(damaged)], "damaged/config.json: key lr: expected float, got the string 'fast'"),
        (["rerun", str(script)], "trainer 'script' is not a runforge trainer"),
        (["rerun", str(run), "--lr", "-1"], "--lr: must be > 0"),
        (["rerun", str(run), "--nosuch", "1"], "unrecognized arguments: --nosuch"),
        (["rerun", str(run), "--out", "a", "--root", "b"], "not allowed with argument"),
        (["rerun", str(run), "--name", "x/y"], "--name 'x/y'"),
    ]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "runforge", "train", "toy", "--preset", "tiny", "--steps", "3",
                           "--out", "src", "--progress", "lines"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    for args, needle in bad_cases(tmp_path / "src", tmp_path):
        before = sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
        done = subprocess.run([sys.executable, "-m", "runforge", *args], cwd=tmp_path, capture_output=True,
                              text=True, env=env, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, (args, done.stderr)
        assert lines[0].startswith("runforge: error: ") and needle in lines[0], (args, lines[0])
        assert sorted((str(p), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before, args
