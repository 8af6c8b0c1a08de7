"""The run layer: everything a training run writes and how it is read back. Imports no torch."""

from .checkpoints import CheckpointManager
from .control import send as send_command
from .export import export
from .metrics import read_metrics
from .read import list_images, list_runs, metrics_frame, read_config, read_info, read_status
from .snapshots import latest_snapshot, list_snapshots, load_snapshot, snapshot_at
from ..errors import CheckpointWriteError
from .run import Control, Run

__all__ = [
    "CheckpointManager",
    "CheckpointWriteError",
    "Control",
    "Run",
    "export",
    "latest_snapshot",
    "list_images",
    "list_runs",
    "list_snapshots",
    "load_snapshot",
    "metrics_frame",
    "read_config",
    "read_info",
    "read_metrics",
    "read_status",
    "send_command",
    "snapshot_at",
]
