"""runforge: a local-first training workbench.

    import runforge
    with runforge.Run(trainer="mine", config={"lr": 1e-3}) as run:
        run.log(step, {"loss": loss})
"""

__version__ = "0.1.0"

from .errors import BadInputError, ConfigError, RunExistsError, RunNotFoundError, RunforgeError

from . import _lazy

# The run layer is loaded on first use (PEP 562): `import runforge` is paid by every CLI call,
# sweep worker and trainer, and most of them touch one or two names of it, or none.
_LAZY = {
    "Control": ("runforge.run.controller", "Control"),
    "Run": ("runforge.run.run", "Run"),
    # The function, not the submodule runforge.run.export that shares its name.
    "export": ("runforge.run.export", "export"),
    "list_runs": ("runforge.run.read", "list_runs"),
    "read_metrics": ("runforge.run.metrics", "read_metrics"),
}

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~2 ms); type checkers read it alike
if TYPE_CHECKING:
    from .run import Control, Run, export, list_runs, read_metrics
del TYPE_CHECKING  # not part of the public surface

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


__getattr__, __dir__ = _lazy.lazy_names(__name__, globals(), _LAZY, __all__)
