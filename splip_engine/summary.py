"""Results over several seeds: mean and spread per metric, and their "61.3 ± 1.2" text (in %)."""
from __future__ import annotations

from typing import Any

import numpy as np


def mean_and_spread(runs: list[dict[str, dict[str, Any]]]) -> tuple[dict, dict]:
    """Per setting and metric, the mean and the sample standard deviation (ddof 1; 0 for one run)
    over runs of {setting: {metric: value}}; metrics that are not numbers in every run are left out."""
    means: dict[str, dict[str, float]] = {}
    spreads: dict[str, dict[str, float]] = {}
    for mode in runs[0]:
        keys = [k for k in runs[0][mode] if all(isinstance(r[mode].get(k), (int, float)) for r in runs)]
        values = {k: np.asarray([float(r[mode][k]) for r in runs]) for k in keys}  # (n_runs,) each
        means[mode] = {k: float(v.mean()) for k, v in values.items()}
        spreads[mode] = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}
    return means, spreads


def format_mean_spread(mean: float, spread: float | None) -> str:
    """A fraction as "%" text: `61.3 ± 1.2` (or `61.3` without a spread)."""
    return f"{100 * mean:.1f}" + (f" ± {100 * spread:.1f}" if spread is not None else "")
