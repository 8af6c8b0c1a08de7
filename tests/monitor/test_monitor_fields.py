"""Snapshot fields: the list the run layer fills, the docs that show it, and seed 002's names."""

from __future__ import annotations

from pathlib import Path

from runforge.run.snapshot_fields import SNAPSHOT_FIELDS, SNAPSHOT_GROUPS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitor.md"

# Every key of seed 002's JSON examples (its sections: metrics, LR, losses, weights, adaptive
# status, quality, performance, layers, status) and the ones monitor.md adds.
SEED_002_KEYS = """
step_current epoch_num step_max epoch_step_current epoch_step_total learning_rate_value lr_phase_name
total_loss_value l1_loss_value ms_loss_value gradient_loss_value perceptual_loss_value l1_weight_current
ms_weight_current gradient_weight_current perceptual_weight_current gradient_clip_val adaptive_mode
adaptive_is_cooldown adaptive_cooldown_remaining adaptive_plateau_counter adaptive_lr_boost_available
adaptive_perceptual_trend quality_lr_value quality_ki_value quality_improvement_value quality_ki_to_gt_value
quality_lr_to_gt_value validation_loss_value best_quality_ever iteration_duration vram_usage_gb adam_momentum_avg
eta_total_formatted eta_epoch_formatted layer_activity_map training_active validation_running training_paused
last_update_time
""".split()
MONITOR_MD_KEYS = ["ram_usage_gb"]


def test_every_seed_and_spec_field_is_listed_once():
    assert len(SNAPSHOT_FIELDS) == len(set(SNAPSHOT_FIELDS))
    assert set(SNAPSHOT_FIELDS) == set(SEED_002_KEYS) | set(MONITOR_MD_KEYS)
    assert SNAPSHOT_FIELDS[:2] == ("step_current", "epoch_num")  # the seed's order, progress first


def test_docs_show_exactly_the_fields_table():
    table = "| group | fields |\n|---|---|\n" + "".join(
        f"| {group} | " + ", ".join(f"`{f}`" for f in fields) + " |\n" for group, fields in SNAPSHOT_GROUPS.items())
    assert table in DOCS.read_text(encoding="utf-8")
