"""`runforge serve | ctl | compare | csv | plot`: watching, steering and analysing runs.

The usual analyses of an sr run's snapshots, one command each (docs/monitor.md):

    runforge csv RUN --source stats --field quality_improvement_value,quality_ki_value   # improvement over time
    runforge show RUN --step 7500                                   # plateau warning (+ the snapshot's key fields)
    runforge compare RUN_A RUN_B --step 7500 --field quality_improvement_value         # compare two runs
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..errors import BadInputError

DEFAULT_PORT = 8765


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number from 0 to 65535") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: give a number from 0 to 65535")
    return port


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise argparse.ArgumentTypeError(f"invalid {text!r}: give a number of seconds, 0 or more")
    return seconds


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def register(commands: Any, data: Any) -> None:
    serve = commands.add_parser("serve", help="the web dashboard over one or more roots of runs")
    serve.add_argument("roots", nargs="*", default=["runs"], metavar="ROOT", help="directories of runs (default: runs)")
    serve.add_argument("--host", type=_nonempty, default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT,
                       help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    serve.add_argument("--token", type=_nonempty,
                       help="control token (default: random when --host is not a loopback address)")
    serve.set_defaults(handler=cmd_serve)

    ctl = commands.add_parser("ctl", help="pause, resume, validate, save or stop a running run")
    ctl.add_argument("run", metavar="RUN")
    ctl.add_argument("command", metavar="CMD", help="pause | resume | validate | save | stop")
    ctl.add_argument("--wait", type=_seconds, default=5.0, metavar="SECONDS",
                     help="wait this long for the trainer to take the command (0: do not wait)")
    ctl.set_defaults(handler=cmd_ctl)

    compare = commands.add_parser("compare", help="runs side by side: snapshots at one step, or last metrics")
    compare.add_argument("runs", nargs="+", metavar="RUN")
    compare.add_argument("--step", type=int, help="the snapshot step (default: the latest step all runs have)")
    compare.add_argument("--field", action="append", metavar="NAME",
                         help="only these fields (repeat or comma-separate)")
    compare.add_argument("--json", action="store_true", help="print JSON instead of a table")
    compare.set_defaults(handler=cmd_compare)

    csv_cmd = commands.add_parser("csv", help="train.jsonl or the snapshots as CSV, one row per step")
    csv_cmd.add_argument("run", metavar="RUN")
    csv_cmd.add_argument("-o", "--output", type=_nonempty, metavar="FILE",
                         help="write here instead of standard output")
    csv_cmd.add_argument("--source", choices=["metrics", "stats"], default="metrics",
                         help="metrics: train.jsonl; stats: the statistics snapshots")
    csv_cmd.add_argument("--field", action="append", metavar="NAME",
                         help="only these columns (repeat or comma-separate)")
    csv_cmd.set_defaults(handler=cmd_csv)

    plot = commands.add_parser("plot", help="a PNG of metric curves, several runs overlaid")
    plot.add_argument("runs", nargs="+", metavar="RUN")
    plot.add_argument("--metric", action="append", metavar="NAME",
                      help="metric of train.jsonl or field of the snapshots (repeat; default: the logged metrics)")
    plot.add_argument("-o", "--output", type=_nonempty, default="training_progress.png", metavar="FILE.png",
                      help="where to write the PNG (default training_progress.png)")
    plot.add_argument("--log", action="store_true", help="logarithmic y axes")
    plot.set_defaults(handler=cmd_plot)


def _names(values: list[str] | None, flag: str) -> list[str] | None:
    if values is None:
        return None
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    if not names:
        raise BadInputError(None, f"{flag}: no names given")
    return names


def _check_output(output: str, runs: Sequence[Path], suffix: str | None = None) -> Path:
    """Where an output goes, refused before anything is read or written when it cannot be written
    there or would replace a file of a run being read."""
    path = Path(output)
    if suffix is not None and path.suffix.lower() != suffix:
        raise BadInputError(path, f"the output must be a {suffix} file")
    if path.is_dir():
        raise BadInputError(path, "is a directory; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInputError(parent, f"is not a directory, so {path} cannot be written")
    from .catalog import confined

    for run_dir in runs:
        if path.exists() and confined(run_dir, run_dir, path.absolute()) is not None:
            raise BadInputError(path, f"is a file of the run {run_dir}: refusing to overwrite it")
    return path


def _write_output(path: Path, data: bytes) -> None:
    from ..run.files import write_bytes

    try:
        write_bytes(path, data)  # atomic: a failure leaves no half-written file
    except OSError as exc:
        raise BadInputError(path, f"cannot be written ({exc.strerror or exc})") from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    import secrets

    import uvicorn

    from .app import create_app

    for root in args.roots:
        if not Path(root).is_dir():
            raise BadInputError(root, "is not a directory of runs")
    loopback = is_loopback(args.host)
    token = args.token or (None if loopback else secrets.token_urlsafe(18))
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        sock.close()
        raise BadInputError(None, f"cannot listen on {args.host}:{args.port} ({exc.strerror})") from None
    sock.listen(2048)  # connections made as soon as the URL is printed wait in the backlog, never refused
    port = sock.getsockname()[1]
    allowed = None
    if loopback:
        allowed = [f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]")]
        if port == 80:
            allowed += ["127.0.0.1", "localhost", "[::1]"]
    app = create_app(args.roots, token=token, allowed_hosts=allowed)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{shown}:{port}/"
    print(f"runforge dashboard: {url}  (roots: {', '.join(args.roots)}; Ctrl-C to stop)", flush=True)
    if token:
        print(f"control token: {token}  (open {url}?token={token} to steer runs)", flush=True)
    if not loopback:
        print(f"warning: bound to {args.host}: anyone who can reach it can read these runs",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def cmd_ctl(args: argparse.Namespace) -> int:
    from ..run import control
    from ..run.layout import CONTROL_DIR
    from ..run.read import summarize
    from .analysis import resolve_run
    from .catalog import resume_command

    if args.command not in control.COMMANDS:
        raise BadInputError(None, f"unknown command {args.command!r}; choose from {', '.join(control.COMMANDS)}")
    summary = summarize(resolve_run(args.run))
    if summary.status == "crashed":
        raise BadInputError(args.run, "run is crashed (its process is gone): nothing would take the command; "
                                      f"resume with: {resume_command(summary.trainer, summary.dir)}")
    if summary.status != "running":
        raise BadInputError(args.run, f"run is {summary.status}, not running: nothing would take the command")
    try:
        path = control.send(args.run, args.command)
    except OSError as exc:
        raise BadInputError(Path(args.run) / CONTROL_DIR,
                            f"cannot be written ({exc.strerror or exc})") from None
    deadline = time.monotonic() + args.wait
    step = control.taken_step(path)
    while step is None and time.monotonic() < deadline:
        time.sleep(0.05)
        step = control.taken_step(path)
    if step is None:
        print(f"{args.command}: sent to {summary.name}; the trainer takes it at its next step boundary")
    else:
        print(f"{args.command}: taken by {summary.name} at step {step}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .analysis import compare, resolve_run

    result = compare([resolve_run(r) for r in args.runs], args.step, _names(args.field, "--field"))
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    from rich.console import Console
    from rich.table import Table

    from ..run.snapshots import is_number

    table = Table(title=f"Comparison: {result['source']}")
    table.add_column("field")
    for label in result["runs"]:
        table.add_column(label, justify="right")
    two = len(result["runs"]) == 2
    if two:
        table.add_column("B - A", justify="right")
    for row in result["rows"]:
        cells = [_cell(v) for v in row["values"]]
        if two:
            cells.append(_cell(row.get("diff")) if is_number(row.get("diff")) else "")
        table.add_row(row["field"], *cells)
    Console().print(table)
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def cmd_csv(args: argparse.Namespace) -> int:
    from ..run.layout import METRICS_FILE
    from .analysis import resolve_run, table_rows, to_csv

    run_dir = resolve_run(args.run)
    fields = _names(args.field, "--field")
    output = _check_output(args.output, [run_dir]) if args.output is not None else None
    rows = table_rows(run_dir, args.source)
    if not rows:
        what = "statistics snapshots" if args.source == "stats" else f"lines in {METRICS_FILE}"
        raise BadInputError(args.run, f"has no {what}")
    text = to_csv(rows, fields, args.run)
    if output is not None:
        _write_output(output, text.encode("utf-8"))
        print(f"wrote {len(rows)} rows to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .analysis import plot, resolve_run

    run_dirs = [resolve_run(r) for r in args.runs]
    output = _check_output(args.output, run_dirs, ".png")
    _write_output(output, plot(run_dirs, _names(args.metric, "--metric"), args.log))
    print(f"wrote {output}")
    return 0
