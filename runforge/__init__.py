"""runforge: a local-first training workbench.

    import runforge
    with runforge.Run(trainer="mine", config={"lr": 1e-3}) as run:
        run.log(step, {"loss": loss})
"""

__version__ = "0.1.0"

from .errors import BadInputError, ConfigError, RunExistsError, RunforgeError, RunNotFoundError
from .run import Control, Run, export, list_runs, read_metrics

__all__ = [
    "BadInputError",
    "ConfigError",
    "Control",
    "Run",
    "RunExistsError",
    "RunNotFoundError",
    "RunforgeError",
    "__version__",
    "export",
    "list_runs",
    "read_metrics",
]
