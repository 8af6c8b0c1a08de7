"""`runforge view RUN [RUN2] [--step N] [--host H] [--port P]`: the maps or splats of one or two runs in 3D."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from typing import Any

from ..errors import BadInputError

DEFAULT_PORT = 8080


def register(commands: Any, data: Any) -> None:
    from ..monitor.cli import _nonempty, _port

    view = commands.add_parser(
        "view", help="3D view of a voxel or splat run's saved steps in the browser (viser)")
    view.add_argument("runs", nargs="+", metavar="RUN",
                      help="a voxel or splat run, an exported maps/trained_map_* folder, a map .json or a .ply; "
                           "two are shown side by side")
    view.add_argument("--step", type=int,
                      help="start at this saved step (a run without it: its last step before it; default: the last)")
    view.add_argument("--host", type=_nonempty, default="127.0.0.1",
                      help="address to bind (default 127.0.0.1: this machine only)")
    view.add_argument("--port", type=_port, default=DEFAULT_PORT,
                      help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    view.set_defaults(handler=cmd_view)


def _frame_at(source: Any, step: int) -> int:
    """The frame saved at `step`, else the last saved before it: two runs rarely save the same steps."""
    exact = [i for i, frame in enumerate(source.frames) if frame.step == step]
    before = [i for i, frame in enumerate(source.frames) if frame.step is not None and frame.step <= step]
    if exact:
        return exact[0]
    return before[-1] if before else 0


def cmd_view(args: argparse.Namespace) -> int:
    if len(args.runs) > 2:
        raise BadInputError("RUN", f"at most two runs side by side, got {len(args.runs)}")
    for module in ("viser", "plyfile"):
        if importlib.util.find_spec(module) is None:
            raise BadInputError(None, f"runforge view needs {module}: pip install 'runforge[view]'")
    from .load import find_source
    from .scene import check_port, load_all, merge_final, serve_forever, start

    sources = [find_source(run) for run in args.runs]
    data = load_all(sources)
    sources, data = zip(*[merge_final(source, items) for source, items in zip(sources, data)])
    initial = [len(source.frames) - 1 for source in sources]
    if args.step is not None:
        initial = [_frame_at(source, args.step) for source in sources]
        if not any(source.frames[i].step == args.step for source, i in zip(sources, initial)):
            saved = "; ".join(f"{source.path}: " + (", ".join(str(f.step) for f in source.frames
                                                               if f.step is not None) or "none")
                              for source in sources)
            raise BadInputError("--step", f"no saved step {args.step} (saved steps: {saved})")
    port = check_port(args.host, args.port)
    server = start(list(sources), list(data), initial, args.host, port)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    names = ", ".join(str(s.path) for s in sources)
    print(f"runforge view: http://{shown}:{port}/  ({names}; Ctrl-C to stop)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: bound to {args.host}: anyone who can reach it can see these runs",
              file=sys.stderr, flush=True)
    try:
        serve_forever(server)
    except KeyboardInterrupt:
        pass
    return 0
