"""Stand-ins for Slurm's `sbatch`, `srun` and `sacct` that run a submitted job (or job array) on this machine,
as a node would, for submitit's SlurmExecutor: sbatch answers at once with a job id, as Slurm does, and
runs the tasks in the background once submitit has put their pickles in place; sacct reports their states."""

import os
import sys
from pathlib import Path

SBATCH = """#!{python}
import re, subprocess, sys
from pathlib import Path
here = Path(__file__).resolve().parent
script = Path(sys.argv[-1])
text = script.read_text()
(here / "submitted.sh").write_text(text)
counter = here / "next_job"
job = int(counter.read_text()) if counter.exists() else 4242
counter.write_text(str(job + 1))
array = re.search(r"^#SBATCH --array=0-(\\d+)", text, re.M)
tasks = int(array.group(1)) + 1 if array else 0
with open(here / f"tasks_{{job}}.log", "w") as log:
    subprocess.Popen([sys.executable, str(here / "run_tasks.py"), str(job), str(script), str(tasks)],
                     stdout=log, stderr=log, start_new_session=True)
print(f"Submitted batch job {{job}}")
"""

RUN_TASKS = """import os, re, subprocess, sys, time
from pathlib import Path
here = Path(__file__).resolve().parent
job, script, tasks = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
text = script.read_text()
folder = Path(re.search(r"^#SBATCH --output=(.*)$", text, re.M).group(1).strip("'")).parent
states = here / "states"
states.mkdir(exist_ok=True)
names = [f"{{job}}_{{i}}" for i in range(tasks)] if tasks else [job]
for name in names:
    (states / name).write_text("PENDING")
for i, name in enumerate(names):
    pickle = folder / f"{{name}}_submitted.pkl"
    deadline = time.time() + 60
    while not pickle.exists() and time.time() < deadline:
        time.sleep(0.05)
    (states / name).write_text("RUNNING")
    env = dict(os.environ, SLURM_JOB_ID=str(int(job) + i + 1) if tasks else job, SLURM_NTASKS="1",
               SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_JOB_NUM_NODES="1",
               SLURM_JOB_NODELIST="localhost")
    if tasks:
        env.update(SLURM_ARRAY_JOB_ID=job, SLURM_ARRAY_TASK_ID=str(i))
    code = subprocess.call(["bash", str(script)], env=env, cwd=os.getcwd())
    (states / name).write_text("COMPLETED" if code == 0 else "FAILED")
"""

SRUN = """#!{python}
import subprocess, os, sys
args = sys.argv[1:]
files = {{}}
while args and args[0].startswith("--"):
    flag = args.pop(0)
    if flag in ("--output", "--error"):
        files[flag] = args.pop(0)
def expand(path):
    env = os.environ
    return (path.replace("%A", env.get("SLURM_ARRAY_JOB_ID", "")).replace("%a", env.get("SLURM_ARRAY_TASK_ID", ""))
            .replace("%j", env["SLURM_JOB_ID"]).replace("%t", "0"))
out = open(expand(files["--output"]), "a") if "--output" in files else None
err = open(expand(files["--error"]), "a") if "--error" in files else out
sys.exit(subprocess.call(args, stdout=out, stderr=err))
"""

SACCT = """#!{python}
import sys
from pathlib import Path
states = Path(__file__).resolve().parent / "states"
args = sys.argv[1:]
jobs = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
print("JobID|State|NodeList")
for path in sorted(states.glob("*")) if states.exists() else []:
    if path.name.split("_")[0] in jobs:
        print(f"{{path.name}}|{{path.read_text()}}|localhost")
"""


def install(bin_dir: Path, monkeypatch) -> Path:
    """Write the stand-ins into `bin_dir` and put it first on PATH; `bin_dir/submitted.sh` is the last script."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("sbatch", SBATCH), ("srun", SRUN), ("sacct", SACCT)):
        (bin_dir / name).write_text(text.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    (bin_dir / "run_tasks.py").write_text(RUN_TASKS.format())
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir
