"""bench/run_all.py: every bench runs although one fails, and a table of exit codes closes."""

import importlib.util
import sys

from conftest import REPO


def _module():
    spec = importlib.util.spec_from_file_location("run_all", REPO / "bench" / "run_all.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_failing_bench_does_not_stop_the_others_and_the_table_counts_it(tmp_path, capsys):
    run_all = _module()
    bench = tmp_path / "bench"
    bench.mkdir()
    for name, code in (("a.py", 0), ("b.py", 3), ("c.py", 0)):
        (bench / name).write_text(f"import sys\nprint('ran {name}')\nsys.exit({code})\n")
    results = run_all.run_benches(sorted(bench.glob("*.py")), sys.executable)
    assert [(r.name, r.code) for r in results] == [("a.py", 0), ("b.py", 3), ("c.py", 0)]
    table = run_all.table(results, 3)
    assert "b.py" in table and "FAILED" in table and "2 of 3 passed, 1 failed" in table


def test_every_bench_file_is_listed_or_a_helper_and_new_ones_are_picked_up(tmp_path):
    run_all = _module()
    names = [p.name for p in run_all.discover()]
    assert names[: len(run_all.BENCHES)] == list(run_all.BENCHES)  # nothing listed is missing from bench/
    assert "import_and_read.py" in names and "integrations_overhead.py" in names
    assert not any(n.startswith("overhead_") or n in ("run_all.py", "jax_cfd_reference.py") for n in names)
    (tmp_path / "log_overhead.py").write_text("")
    (tmp_path / "overhead_x.py").write_text("")
    (tmp_path / "brand_new.py").write_text("")
    assert [p.name for p in run_all.discover(tmp_path)] == ["log_overhead.py", "brand_new.py"]
