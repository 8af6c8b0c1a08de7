"""docs/kolmogorov.md carries exactly the generated flag tables (training, data, assimilation)."""

from pathlib import Path

from runforge.config import markdown_table
from runforge.trainers.kolmogorov.config import AssimilateConfig, Config, DataConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "kolmogorov.md"


def test_docs_hold_the_generated_flag_tables():
    text = DOC.read_text(encoding="utf-8")
    assert "## Training flags\n\n" + markdown_table(Config) in text
    assert "## Data flags (`runforge data kolmogorov`)\n\n" + markdown_table(DataConfig) in text
    assert "## Assimilation flags (`runforge assimilate RUN`)\n\n" + markdown_table(AssimilateConfig) in text
