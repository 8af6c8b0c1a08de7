"""Races between processes (run creation, exports) and between a logging thread and the writer."""

import json
import subprocess
import time

import runforge

from conftest import PYTHON, read_json

CREATE = """
import sys, time, runforge
start = float(sys.argv[2])
while time.time() < start:
    pass
with runforge.Run(trainer="race", config={"i": int(sys.argv[1])}, root="runs") as run:
    run.log(1, {"i": int(sys.argv[1])})
"""

EXPORT = """
import sys, time, runforge
start = float(sys.argv[1])
while time.time() < start:
    pass
print(runforge.export("runs/src", registry="maps", prefix="trained_map", source=1,
                      files={"map.json": "runs/src/final_map.json"}, metadata={"prompt": "a castle"}))
"""


def _start_together(script, args_list, cwd):
    start = time.time() + 1.5  # every process is imported and spinning before the start
    procs = [subprocess.Popen([PYTHON, "-c", script, *map(str, args), str(start)] if args else
                              [PYTHON, "-c", script, str(start)], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for args in args_list]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return [out for out, _ in outs]


def test_16_processes_creating_runs_at_once_get_16_complete_dirs(tmp_dir):
    _start_together(CREATE, [[i] for i in range(16)], tmp_dir)
    dirs = sorted((tmp_dir / "runs").iterdir())
    assert len(dirs) == 16
    seen = set()
    for d in dirs:
        info = read_json(d / "run.json")
        assert info["status"] == "finished" and d.name == f"{info['name']}_{info['id']}"
        i = read_json(d / "config.json")["i"]
        assert json.loads((d / "train.jsonl").read_text())["i"] == i
        seen.add(i)
    assert seen == set(range(16))


def test_8_racing_exports_get_numbers_1_to_8_and_8_registry_entries(tmp_dir):
    src = tmp_dir / "runs" / "src"
    import runforge

    with runforge.Run(trainer="voxel", out=src, config={"steps": 5}) as run:
        run.log(5, {"loss": 0.5})
    (src / "final_map.json").write_text('{"blocks": []}')
    outputs = _start_together(EXPORT, [[] for _ in range(8)], tmp_dir)
    made = sorted(out.strip().rsplit("/", 1)[1] for out in outputs)
    assert made == sorted(f"trained_map_1_{x}" for x in range(1, 9))
    for name in made:
        folder = tmp_dir / "maps" / name
        assert sorted(p.name for p in folder.iterdir()) == ["map.json", "train.jsonl", "training_metadata.json"]
        meta = read_json(folder / "training_metadata.json")
        assert meta["export"] == name and meta["run_id"] == run.id and meta["prompt"] == "a castle"
        assert meta["steps"] == 5 and meta["final_metrics"]["loss"] == 0.5 and meta["config"] == {"steps": 5}
    registry = read_json(tmp_dir / "maps" / "registry.json")
    assert sorted(entry["export"] for entry in registry) == made
    assert not [p for p in (tmp_dir / "maps").iterdir() if p.name.startswith(".export-")]


def test_export_numbering_continues_per_source_and_refuses_missing_files(tmp_dir):
    import runforge
    from runforge.errors import BadInputError

    with runforge.Run(out="runs/a") as run:
        pass
    (run.dir / "final_map.json").write_text("{}")
    files = {"map.json": run.dir / "final_map.json"}
    (tmp_dir / "maps" / "trained_map_1_7").mkdir(parents=True)
    assert runforge.export(run.dir, "maps", "trained_map", 1, files).name == "trained_map_1_8"
    assert runforge.export(run.dir, "maps", "trained_map", 2, files).name == "trained_map_2_1"
    try:
        runforge.export(run.dir, "maps", "trained_map", 1, {"map.json": run.dir / "nope.json"})
    except BadInputError as exc:
        assert "nope.json" in str(exc)
    else:
        raise AssertionError("a missing artifact was exported")
    assert sorted(p.name for p in (tmp_dir / "maps").iterdir() if not p.name.startswith(".")) == [
        "registry.json", "trained_map_1_7", "trained_map_1_8", "trained_map_2_1"]


def test_a_record_appended_while_the_writer_drains_is_written_not_lost():
    from runforge.run.writer import BackgroundWriter

    written = []
    writer = BackgroundWriter(written.extend, lambda kind, essential, exc: None, flush_interval=60)
    try:
        records = writer.records  # what Run.log holds between fetching the container and appending
        records.append(1)
        writer.drain_records()  # the writer takes the batch in between
        records.append(2)
        writer.drain_records()
    finally:
        writer.close()
    assert written == [1, 2]


def test_a_hundred_thousand_fast_log_calls_leave_as_many_lines(tmp_dir):
    steps = 100_000
    with runforge.Run(out=tmp_dir / "fast", tensorboard=False) as run:
        for step in range(1, steps + 1):
            run.log(step, {"loss": 1.0})
    lines = (run.dir / "train.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, steps + 1))
