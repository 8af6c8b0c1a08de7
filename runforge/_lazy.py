"""A package's public names loaded on first use (PEP 562), shared by `runforge` and `runforge.run`."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~2 ms of `import runforge`; type checkers read this alike
if TYPE_CHECKING:
    from typing import Any, Callable


def lazy_names(package: str, namespace: dict[str, Any], names: dict[str, tuple[str, str]],
               public: list[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`(__getattr__, __dir__)` for `package`: `names` maps a public name to (module, attribute); a
    loaded name is kept in `namespace` (the package's globals), so it is looked up once. Submodules
    stay reachable as attributes, as they were when the package imported them eagerly."""

    def getattr_(name: str) -> Any:
        import importlib

        if name.startswith("__"):  # hasattr(module, "__wrapped__") and such: not a submodule to look for
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        source = names.get(name)
        if source is not None:
            value = getattr(importlib.import_module(source[0]), source[1])
            namespace[name] = value
            return value
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(public))

    return getattr_, dir_
