"""Bad input to `runforge serve | ctl | compare | csv | plot`: one stderr line naming the file or flag,
exit code 2, nothing printed, nothing on disk created or changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest

from runforge.cli import main
from monitor_helpers import edit_info, make_crashed, make_run, running_info


def _tree(base):
    """Every path under `base` with a hash of each file's bytes (links as their targets)."""
    tree = {}
    for folder, dirs, files in os.walk(base):
        for name in dirs + files:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, base)
            if os.path.islink(path):
                tree[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                tree[rel] = "dir"
            else:
                with open(path, "rb") as f:
                    tree[rel] = hashlib.sha256(f.read()).hexdigest()
    return tree


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    make_run(base, "good", steps=10, snapshots={10: {"best_quality_ever": 0.5}})
    make_run(base, "nostats", steps=4)
    edit_info(make_run(base, "live", steps=4), **running_info())
    make_crashed(base)
    control_file = make_run(base, "control-file", steps=4)
    edit_info(control_file, **running_info())
    shutil.rmtree(control_file / "control", ignore_errors=True)
    (control_file / "control").write_text("not a folder")
    lines = b'{"step": 1, "loss": 1.0}\n'
    (make_run(base, "bad-utf8", steps=2) / "train.jsonl").write_bytes(lines + b'{"step": 2, "x": "\xff\xfe"}\n' + lines)
    (make_run(base, "bad-json", steps=2) / "train.jsonl").write_bytes(lines + b'{"step": 2, "lo\n' + lines)
    log_dir = make_run(base, "log-dir", steps=2)
    (log_dir / "train.jsonl").unlink()
    (log_dir / "train.jsonl").mkdir()
    runjson_dir = make_run(base, "runjson-dir", steps=2)
    (runjson_dir / "run.json").unlink()
    (runjson_dir / "run.json").mkdir()
    (make_run(base, "runjson-bad", steps=2) / "run.json").write_bytes(b'{"name": ')
    bad_snapshot = make_run(base, "bad-snapshot", steps=10, snapshots={10: {"best_quality_ever": 0.5}})
    (bad_snapshot / "stats" / "stats_10.json").write_bytes(b"\xff not json")
    (base / "a-file.txt").write_text("just a file")
    (base / "out-dir").mkdir()
    (base / "out.png").mkdir()
    return base


# (argv with {B} for the base folder, what the one stderr line must name)
CASES = [
    # csv
    (["csv", "{B}/log-dir"], "log-dir/train.jsonl"),
    (["csv", "{B}/nope"], "{B}/nope"),
    (["csv", "{B}/a-file.txt"], "a-file.txt"),
    (["csv", "{B}/runjson-dir"], "runjson-dir/run.json"),
    (["csv", "{B}/runjson-bad"], "runjson-bad/run.json"),
    (["csv", "{B}/good", "-o", "{B}/out-dir"], "out-dir: is a directory"),
    (["csv", "{B}/good", "-o", "{B}/good"], "good: is a directory"),
    (["csv", "{B}/good", "-o", "{B}/a-file.txt/rows.csv"], "a-file.txt: is not a directory"),
    (["csv", "{B}/good", "-o", "{B}/a-file.txt/deeper/rows.csv"], "a-file.txt: is not a directory"),
    (["csv", "{B}/good", "-o", "{B}/good/config.json"], "good/config.json: is a file of the run"),
    (["csv", "{B}/good", "-o", "{B}/good/train.jsonl"], "good/train.jsonl: is a file of the run"),
    (["csv", "{B}/good", "-o", ""], "--output"),
    (["csv", "{B}/good", "--field", "nope", "-o", "{B}/new.csv"], "no field 'nope'"),
    (["csv", "{B}/good", "--field", ",", "-o", "{B}/new.csv"], "--field"),
    (["csv", "{B}/good", "--source", "stats", "--field", "nope"], "no field 'nope'"),
    (["csv", "{B}/good", "--source", "bogus"], "--source"),
    (["csv", "{B}/nostats", "--source", "stats", "-o", "{B}/new.csv"], "has no statistics snapshots"),
    (["csv", "{B}/bad-snapshot", "--source", "stats", "-o", "{B}/new.csv"], "stats_10.json"),
    # serve
    (["serve", "{B}", "--port", "70000"], "--port"),
    (["serve", "{B}", "--port", "-1"], "--port"),
    (["serve", "{B}", "--port", "http"], "--port"),
    (["serve", "{B}/nope", "--port", "0"], "{B}/nope"),
    (["serve", "{B}/a-file.txt", "--port", "0"], "a-file.txt"),
    (["serve", "{B}", "--host", "", "--port", "0"], "--host"),
    (["serve", "{B}", "--host", "203.0.113.7", "--port", "0"], "203.0.113.7"),
    (["serve", "{B}", "--token", "", "--port", "0"], "--token"),
    # ctl
    (["ctl", "{B}/live", "pause", "--wait", "-1"], "--wait"),
    (["ctl", "{B}/live", "pause", "--wait", "nan"], "--wait"),
    (["ctl", "{B}/live", "pause", "--wait", "inf"], "--wait"),
    (["ctl", "{B}/live", "pause", "--wait", "soon"], "--wait"),
    (["ctl", "{B}/live", "explode"], "'explode'"),
    (["ctl", "{B}/good", "pause"], "good: run is finished"),
    (["ctl", "{B}/crashed", "pause"], "crashed: run is crashed"),
    (["ctl", "{B}/nope", "pause"], "{B}/nope"),
    (["ctl", "{B}/a-file.txt", "pause"], "a-file.txt"),
    (["ctl", "{B}/runjson-dir", "pause"], "runjson-dir/run.json"),
    (["ctl", "{B}/control-file", "pause"], "control-file/control"),
    # compare
    (["compare", "{B}/good", "{B}/nope"], "{B}/nope"),
    (["compare", "{B}/good", "{B}/good", "--step", "7"], "no statistics snapshot at step 7"),
    (["compare", "{B}/good", "{B}/good", "--step", "seven"], "--step"),
    (["compare", "{B}/good", "{B}/good", "--field", "nope"], "no field 'nope'"),
    (["compare", "{B}/good", "{B}/good", "--field", ","], "--field"),
    (["compare", "{B}/good", "{B}/bad-snapshot", "--step", "10"], "stats_10.json"),
    # plot
    (["plot", "{B}/good", "-o", "{B}/out.png"], "out.png: is a directory"),
    (["plot", "{B}/good", "-o", "{B}/a-file.txt/p.png"], "a-file.txt: is not a directory"),
    (["plot", "{B}/good", "-o", "{B}/p.txt"], "p.txt: the output must be a .png file"),
    (["plot", "{B}/good", "-o", ""], "--output"),
    (["plot", "{B}/good", "--metric", "nope", "-o", "{B}/p.png"], "no metric 'nope'"),
    (["plot", "{B}/good", "--metric", ",", "-o", "{B}/p.png"], "--metric"),
    (["plot", "{B}/nope", "-o", "{B}/p.png"], "{B}/nope"),
    (["plot", "{B}/good", "{B}/log-dir", "-o", "{B}/p.png"], "log-dir/train.jsonl"),
]


@pytest.mark.parametrize("argv, names", CASES, ids=[" ".join(a).replace("{B}/", "") for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(base, capsys, argv, names):
    argv = [a.replace("{B}", str(base)) for a in argv]
    names = names.replace("{B}", str(base))
    before = _tree(base)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("runforge") and ": error: " in lines[0], err
    assert names in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert _tree(base) == before


def test_the_same_commands_succeed_on_good_input(base, capsys, tmp_path):
    """The cases above fail for the reason they name, not because the commands are broken."""
    out = tmp_path / "rows.csv"
    assert main(["csv", str(base / "good"), "-o", str(out), "--field", "loss"]) == 0
    assert out.read_text().splitlines()[0] == "step,loss"
    assert main(["plot", str(base / "good"), "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(base / "good"), "-o", str(tmp_path / "new" / "p.png")]) == 0  # a new folder is made
    assert main(["compare", str(base / "good"), str(base / "good"), "--step", "10", "--json"]) == 0
    assert main(["ctl", str(base / "live"), "pause", "--wait", "0"]) == 0
    assert "pause: sent to live" in capsys.readouterr().out
    sent = list((base / "live" / "control").glob("*-pause.cmd"))
    assert len(sent) == 1
    sent[0].unlink()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left behind
    assert json.loads((base / "good" / "config.json").read_text()) == {"steps": 10}


@pytest.mark.parametrize("argv", [["csv", "{B}/bad-json"], ["csv", "{B}/bad-utf8"], ["compare", "{B}/good", "{B}/bad-json"],
                                  ["plot", "{B}/bad-utf8", "-o", "{T}/p.png"]], ids=lambda a: " ".join(a[:2]))
def test_a_damaged_line_of_train_jsonl_is_one_warning_line_not_an_error(base, capsys, tmp_path, argv):
    """Readers skip the damaged line and name it (resume still refuses: tests/test_bad_input.py)."""
    argv = [a.replace("{B}", str(base)).replace("{T}", str(tmp_path)) for a in argv]
    before = _tree(base)
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    warnings = [line for line in err if line.startswith("runforge: warning: ")]
    assert len(warnings) == 1 and "/train.jsonl: line 2 is not valid JSON; skipped it" in warnings[0], err
    assert _tree(base) == before
