"""The run layer: everything a training run writes and how it is read back. Imports no torch.

Names are loaded on first use (PEP 562), so that importing one of them, or a submodule, does not
pay for the rest (`Run` alone pulls in the controller, the writer, checkpoints and run opening).
"""

# Bound eagerly because the submodule has the same name: imported later, it would replace the
# package attribute `export` with itself and the lazy lookup below would never run. It is light.
from .export import export

from .. import _lazy

_LAZY = {
    "CheckpointManager": ("runforge.run.checkpoints", "CheckpointManager"),
    "CheckpointWriteError": ("runforge.errors", "CheckpointWriteError"),
    "Control": ("runforge.run.controller", "Control"),
    "Run": ("runforge.run.run", "Run"),
    "latest_snapshot": ("runforge.run.snapshots", "latest_snapshot"),
    "list_images": ("runforge.run.read", "list_images"),
    "list_runs": ("runforge.run.read", "list_runs"),
    "list_snapshots": ("runforge.run.snapshots", "list_snapshots"),
    "load_snapshot": ("runforge.run.snapshots", "load_snapshot"),
    "metrics_frame": ("runforge.run.read", "metrics_frame"),
    "read_annotations": ("runforge.run.annotations", "read_annotations"),
    "read_config": ("runforge.run.read", "read_config"),
    "read_info": ("runforge.run.read", "read_info"),
    "read_metrics": ("runforge.run.metrics", "read_metrics"),
    "read_status": ("runforge.run.read", "read_status"),
    "read_system": ("runforge.run.system", "read_system"),
    "send_command": ("runforge.run.control", "send"),
    "snapshot_at": ("runforge.run.snapshots", "snapshot_at"),
}

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms); type checkers read it alike
if TYPE_CHECKING:
    from ..errors import CheckpointWriteError
    from .annotations import read_annotations
    from .checkpoints import CheckpointManager
    from .control import send as send_command
    from .controller import Control
    from .metrics import read_metrics
    from .read import list_images, list_runs, metrics_frame, read_config, read_info, read_status
    from .system import read_system
    from .run import Run
    from .snapshots import latest_snapshot, list_snapshots, load_snapshot, snapshot_at
del TYPE_CHECKING  # not part of the public surface

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
    "read_annotations",
    "read_config",
    "read_info",
    "read_metrics",
    "read_status",
    "read_system",
    "send_command",
    "snapshot_at",
]


__getattr__, __dir__ = _lazy.lazy_names(__name__, globals(), _LAZY, __all__)
