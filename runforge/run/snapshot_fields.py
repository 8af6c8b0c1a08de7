"""Which fields a statistics snapshot carries, and under which headings the dashboard shows them.

A snapshot is flat JSON. Its fields are the ones its trainer declares, in named groups
(`Run(snapshot_groups=...)`, recorded in run.json as `snapshot_groups`); a declared field
the trainer has no value for is written as null, never left out, so a reader can rely
on every declared key being there. Keys a trainer passes without declaring them are
written too, after the declared ones.

The run layer adds only what it knows of every run: `CORE_FIELDS` always, and the rest
of its live state (`Run.status_fields`: progress, timing, memory, pause/validation
flags) where the trainer declares those fields, or where it declares nothing at all
(`SNAPSHOT_GROUPS`: a user's script, a trainer without a vocabulary of its own).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

CORE_FIELDS: tuple[str, ...] = ("step_current", "last_update_time")
"""In every snapshot: the step it was taken at and the wall-clock time (Unix seconds)."""

CORE_GROUP = "run"
"""The group the core fields go into when a declaration leaves them out."""

SNAPSHOT_GROUPS: dict[str, tuple[str, ...]] = {
    "progress": ("step_current", "step_max", "epoch_num", "epoch_step_current", "epoch_step_total"),
    "performance": ("iteration_duration", "eta_total_seconds", "eta_total_formatted", "eta_epoch_formatted",
                    "ram_usage_gb", "memory_rss_bytes", "vram_usage_gb"),
    "status": ("training_active", "validation_running", "training_paused", "last_update_time"),
}
"""The generic groups: the run layer's live state, every value of which `Run` fills in itself.
The snapshots of a run that declares no groups carry these; readers group a run whose run.json
records none (runs written before the declaration existed) by them too."""

SNAPSHOT_FIELDS: tuple[str, ...] = tuple(field for group in SNAPSHOT_GROUPS.values() for field in group)
"""The generic fields, in the order a snapshot of an undeclared run lists them."""


def declare(groups: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """The groups a run's snapshots carry: `groups` with any missing core field put first (in
    the group `CORE_GROUP`), or the generic groups when `groups` is None. A declaration that
    is not a mapping of names to sequences of distinct field names is a ValueError."""
    if groups is None:
        return dict(SNAPSHOT_GROUPS)
    if not isinstance(groups, Mapping):
        raise ValueError(f"snapshot_groups must map group names to field names, not {type(groups).__name__}")
    declared: dict[str, tuple[str, ...]] = {}
    seen: set[str] = set()
    for name, fields in groups.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"snapshot group name {name!r} is not a non-empty string")
        if isinstance(fields, str) or not isinstance(fields, Sequence):
            raise ValueError(f"snapshot group {name!r} must be a sequence of field names, not {fields!r}")
        for field in fields:
            if not isinstance(field, str) or not field:
                raise ValueError(f"snapshot group {name!r}: field {field!r} is not a non-empty string")
            if field in seen:
                raise ValueError(f"snapshot field {field!r} is declared twice")
            seen.add(field)
        declared[name] = tuple(fields)
    missing = tuple(field for field in CORE_FIELDS if field not in seen)
    if not missing:
        return declared
    return {CORE_GROUP: missing + declared.pop(CORE_GROUP, ()), **declared}


def fields_of(groups: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """Every field of `groups`, in the order a snapshot lists them."""
    return tuple(field for fields in groups.values() for field in fields)


def recorded_groups(info: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The snapshot groups a run.json records; the generic groups when it records none or
    something that is not a mapping of names to lists of names (a hand-edited file)."""
    recorded = info.get("snapshot_groups") if isinstance(info, Mapping) else None
    if isinstance(recorded, dict) and all(
            isinstance(name, str) and isinstance(fields, list) and all(isinstance(f, str) for f in fields)
            for name, fields in recorded.items()):
        return {name: list(fields) for name, fields in recorded.items()}
    return {name: list(fields) for name, fields in SNAPSHOT_GROUPS.items()}
