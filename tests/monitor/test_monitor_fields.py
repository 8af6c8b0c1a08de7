"""Snapshot fields: the generic groups the run layer fills, sr's declared vocabulary, and the docs that list them."""

from __future__ import annotations

from pathlib import Path

import pytest

from runforge.run.snapshot_fields import (CORE_FIELDS, SNAPSHOT_FIELDS, SNAPSHOT_GROUPS, declare, fields_of,
                                          recorded_groups)
from runforge.trainers.sr.config import SNAPSHOT_GROUPS as SR_GROUPS

DOCS = Path(__file__).resolve().parents[2] / "docs"

# Every key of the sr trainer's Statistik_{STEP}.json as the sr users' analysis scripts read it
# (progress, LR, losses, weights, adaptive status, quality, performance, layers, status).
SR_KEYS = """
step_current epoch_num step_max epoch_step_current epoch_step_total learning_rate_value lr_phase_name
total_loss_value l1_loss_value ms_loss_value gradient_loss_value perceptual_loss_value l1_weight_current
ms_weight_current gradient_weight_current perceptual_weight_current gradient_clip_val adaptive_mode
adaptive_is_cooldown adaptive_cooldown_remaining adaptive_plateau_counter adaptive_lr_boost_available
adaptive_perceptual_trend quality_lr_value quality_ki_value quality_improvement_value quality_ki_to_gt_value
quality_lr_to_gt_value validation_loss_value best_quality_ever iteration_duration vram_usage_gb adam_momentum_avg
eta_total_formatted eta_epoch_formatted layer_activity_map training_active validation_running training_paused
last_update_time ram_usage_gb
""".split()


def table(groups) -> str:
    return "| group | fields |\n|---|---|\n" + "".join(
        f"| {group} | " + ", ".join(f"`{f}`" for f in fields) + " |\n" for group, fields in groups.items())


def test_sr_declares_every_field_its_users_read_once_progress_first():
    fields = fields_of(SR_GROUPS)
    assert len(fields) == len(set(fields))
    assert set(SR_KEYS) <= set(fields)
    assert fields[:2] == ("step_current", "epoch_num")
    assert declare(SR_GROUPS) == SR_GROUPS  # the core fields are among them: no extra group


def test_the_generic_groups_hold_no_trainer_vocabulary():
    assert set(CORE_FIELDS) <= set(SNAPSHOT_FIELDS) and len(SNAPSHOT_FIELDS) == len(set(SNAPSHOT_FIELDS))
    sr_only = set(fields_of(SR_GROUPS)) - set(SNAPSHOT_FIELDS)
    assert {"adaptive_plateau_counter", "quality_ki_value", "l1_loss_value", "layer_activity_map"} <= sr_only
    assert not any(f.startswith(("adaptive_", "quality_", "l1_", "ms_", "gradient_", "perceptual_"))
                   for f in SNAPSHOT_FIELDS)


def test_a_declaration_gets_the_core_fields_and_refuses_duplicates():
    assert declare(None) == SNAPSHOT_GROUPS
    assert declare({"validation": ["psnr", "ssim"]}) == {"run": CORE_FIELDS, "validation": ("psnr", "ssim")}
    assert declare({"v": ("psnr", "step_current")}) == {"run": ("last_update_time",), "v": ("psnr", "step_current")}
    for bad in ({"a": "psnr"}, {"a": ["x"], "b": ["x"]}, {"": ["x"]}, {"a": [1]}, ["psnr"]):
        with pytest.raises(ValueError):
            declare(bad)


def test_readers_fall_back_to_the_generic_groups_for_runs_that_record_none():
    generic = {name: list(fields) for name, fields in SNAPSHOT_GROUPS.items()}
    assert recorded_groups({"snapshot_groups": {"v": ["psnr"]}}) == {"v": ["psnr"]}
    for info in ({}, None, {"snapshot_groups": "v"}, {"snapshot_groups": {"v": "psnr"}},
                 {"snapshot_groups": {"v": [1]}}, {"snapshot_groups": None}):
        assert recorded_groups(info) == generic


def test_docs_show_exactly_the_fields_tables():
    assert table(SNAPSHOT_GROUPS) in (DOCS / "run-layer.md").read_text(encoding="utf-8")
    assert table(SR_GROUPS) in (DOCS / "sr.md").read_text(encoding="utf-8")
