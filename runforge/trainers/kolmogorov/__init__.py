"""`kolmogorov`: score-based data assimilation on 2D Kolmogorov flow (SDA)."""
