"""Every field a statistics snapshot carries (monitor.md, seed 002's `Statistik_{STEP}.json`).

A snapshot is flat JSON. A field a trainer has no value for is written as null,
never left out, so a reader (the dashboard, `runforge csv`, a user's script that
does `data['adaptive_plateau_counter']`) can rely on every key being there.
Trainers add their own keys on top (one `<name>_loss_value` per loss term,
extra quality metrics); these are the ones every snapshot has.
"""

from __future__ import annotations

SNAPSHOT_GROUPS: dict[str, tuple[str, ...]] = {
    "progress": ("step_current", "epoch_num", "step_max", "epoch_step_current", "epoch_step_total"),
    "learning rate": ("learning_rate_value", "lr_phase_name"),
    # seed 002's four loss terms; other trainers leave them null and add their own `<name>_loss_value`
    "losses": ("total_loss_value", "l1_loss_value", "ms_loss_value", "gradient_loss_value", "perceptual_loss_value"),
    "weights": ("l1_weight_current", "ms_weight_current", "gradient_weight_current", "perceptual_weight_current",
                "gradient_clip_val"),
    "adaptive": ("adaptive_mode", "adaptive_is_cooldown", "adaptive_cooldown_remaining", "adaptive_plateau_counter",
                 "adaptive_lr_boost_available", "adaptive_perceptual_trend"),
    "quality": ("quality_lr_value", "quality_ki_value", "quality_improvement_value", "quality_ki_to_gt_value",
                "quality_lr_to_gt_value", "validation_loss_value", "best_quality_ever"),
    "performance": ("iteration_duration", "vram_usage_gb", "ram_usage_gb", "adam_momentum_avg",
                    "eta_total_formatted", "eta_epoch_formatted"),
    "layers": ("layer_activity_map",),
    "status": ("training_active", "validation_running", "training_paused", "last_update_time"),
}
"""The fields by the headings of seed 002 (the dashboard shows a snapshot in these groups)."""

SNAPSHOT_FIELDS: tuple[str, ...] = tuple(field for group in SNAPSHOT_GROUPS.values() for field in group)
"""Every field, in the order a snapshot file lists them."""
