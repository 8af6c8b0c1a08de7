"""runforge: a local-first training workbench.

    import runforge
    with runforge.Run(trainer="mine", config={"lr": 1e-3}) as run:
        run.log(step, {"loss": loss})
"""

__version__ = "0.1.0"

from .errors import BadInputError, ConfigError, RunExistsError, RunNotFoundError, RunforgeError

# The run layer is loaded on first use (PEP 562): `import runforge` is paid by every CLI call,
# sweep worker and trainer, and most of them touch one or two names of it, or none.
_LAZY = {
    "Control": "runforge.run.controller",
    "Run": "runforge.run.run",
    # The function, not the submodule runforge.run.export that shares its name.
    "export": "runforge.run.export",
    "list_runs": "runforge.run.read",
    "read_metrics": "runforge.run.metrics",
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


def __getattr__(name: str):
    import importlib

    if name.startswith("__"):  # hasattr(module, "__wrapped__") and such: not a submodule to look for
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    source = _LAZY.get(name)
    if source is not None:
        value = getattr(importlib.import_module(source), name)
        globals()[name] = value
        return value
    # Subpackages were attributes after `import runforge` when it imported them eagerly; keep that.
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
