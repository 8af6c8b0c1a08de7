"""The names of everything in a run directory, defined once; every reader and writer uses these.

    {run}/run.json                              RUN_FILE: identity, status, resumes, where snapshots go
    {run}/config.json                           CONFIG_FILE: the resolved config
    {run}/status.json                           STATUS_FILE: live step, ETA, pause state
    {run}/annotations.json                      ANNOTATIONS_FILE: the user's tags and note (the dashboard edits it)
    {run}/events.log                            EVENTS_FILE: one line per event
    {run}/train.jsonl                           METRICS_FILE: one JSON line per logged step
    {run}/train.index                           METRICS_INDEX_FILE: train.jsonl's numeric columns (derived)
    {run}/system.jsonl                          SYSTEM_FILE: CPU, memory and GPU figures every 10 s
    {run}/tb/                                   TB_DIR: TensorBoard event files
    {run}/images/                               IMAGES_DIR: sample images
    {run}/renders/                              RENDERS_DIR: splat's validation renders and trajectory videos
    {run}/stats/stats_{step}.json               SNAPSHOT_DIR / SNAPSHOT_PATTERN (a trainer may choose others)
    {run}/ckpts/ckpt_{step}_rank{rank}.pt       CHECKPOINT_DIR / CHECKPOINT_PATTERN
    {run}/ckpts/index_rank{rank}.json           CHECKPOINT_INDEX_PATTERN: the checkpoints that are complete
    {run}/control/{command}[.taken]             CONTROL_DIR, RECEIPT_SUFFIX: the control channel
    {registry}/registry.json                    REGISTRY_FILE: the exports of a registry folder
    {root}/{sweep}/sweep.json                   SWEEP_FILE: a sweep's points, one run folder each beside it
    {registry}/{export}/training_metadata.json  METADATA_FILE

docs/run-layer.md describes each file's contents.
"""

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
STATUS_FILE = "status.json"
ANNOTATIONS_FILE = "annotations.json"
EVENTS_FILE = "events.log"
METRICS_FILE = "train.jsonl"
METRICS_INDEX_FILE = "train.index"
SYSTEM_FILE = "system.jsonl"
TB_DIR = "tb"
IMAGES_DIR = "images"
RENDERS_DIR = "renders"
SNAPSHOT_DIR = "stats"
SNAPSHOT_PATTERN = "stats_{step}.json"
CHECKPOINT_DIR = "ckpts"
CHECKPOINT_PATTERN = "ckpt_{step}_rank{rank}.pt"
CHECKPOINT_INDEX_PATTERN = "index_rank{rank}.json"
CONTROL_DIR = "control"
RECEIPT_SUFFIX = ".taken"
REGISTRY_FILE = "registry.json"
METADATA_FILE = "training_metadata.json"
SWEEP_FILE = "sweep.json"
TEMP_SUFFIX = ".tmp"
"""`.{name}.{random}.tmp`: what a writer killed mid-write leaves behind."""


def checkpoint_index(rank: int = 0) -> str:
    """The index file of `rank`, relative to the run directory."""
    return f"{CHECKPOINT_DIR}/{CHECKPOINT_INDEX_PATTERN.format(rank=rank)}"
