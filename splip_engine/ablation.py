"""The paper's loss and module ablations (SPEC.md §6) as one job: train SpLIP once per (row, seed)
with that row's config switches, score ZS / GZS on the unseen classes, and write the table
(Markdown + JSON, mean ± spread over the seeds) beside the paper's Sketchy split-2 mAP@200.

Each row is a set of SpLIPConfig overrides of the base config (the one `run_ablation` is given):
the loss rows build the objective up term by term (L_class only, L_triplet only, both, + adaptive
margin, + L_cjs); the module rows switch mapping blocks off under the base config's loss (what
"without B_t" etc. means is in SpLIPConfig.use_b_t / use_b_v / use_b_vt). The rows run in one or
both LayerNorm regimes: "trained" (the towers' LayerNorms learn at the recipe's `lr_layernorm`) and
"frozen" (`lr_layernorm` 0: only the prompt modules learn, the strict reading of "frozen CLIP").
The loss rows run in the first regime chosen only; the module rows in each. A run whose metrics
file exists is not trained again, so an interrupted ablation continues where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splip_engine.config import SpLIPConfig
from splip_engine.errors import SpLIPError
from splip_engine.summary import format_mean_spread, mean_and_spread
from splip_engine.train import TrainConfig

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
TABLE_FILES = ("ablation.md", "ablation.json")
LAYERNORM_REGIMES = ("trained", "frozen")
"""The towers' LayerNorms learn at TrainConfig.lr_layernorm ("trained") or not at all ("frozen")."""
_COLUMNS = (("zs", "map_all", "ZS mAP@all"), ("zs", "map_200", "ZS mAP@200"), ("zs", "prec_100", "ZS P@100"),
            ("gzs", "map_all", "GZS mAP@all"))


@dataclass(frozen=True)
class AblationRow:
    """One line of the paper's ablation tables: how its config differs from the base config."""

    name: str
    group: str  # "loss" or "module"
    overrides: Callable[[SpLIPConfig], dict[str, Any]]
    paper: float | None
    """The paper's mAP@200 on Sketchy-Ext split 2 (SPEC §6), in %."""


def _alpha(cfg: SpLIPConfig) -> float:
    return cfg.alpha or SpLIPConfig.alpha  # a loss row that uses L_class needs a weight > 0


def _beta(cfg: SpLIPConfig) -> float:
    return cfg.beta or SpLIPConfig.beta


ROWS: tuple[AblationRow, ...] = (
    AblationRow("L_class only", "loss", lambda c: {"triplet_weight": 0.0, "alpha": _alpha(c), "beta": 0.0}, 57.5),
    AblationRow("L_triplet only", "loss",
                lambda c: {"triplet_weight": 1.0, "alpha": 0.0, "beta": 0.0, "adaptive_margin": False}, 71.6),
    AblationRow("L_triplet + L_class", "loss",
                lambda c: {"triplet_weight": 1.0, "alpha": _alpha(c), "beta": 0.0, "adaptive_margin": False}, 73.1),
    AblationRow("+ adaptive margin", "loss",
                lambda c: {"triplet_weight": 1.0, "alpha": _alpha(c), "beta": 0.0, "adaptive_margin": True}, 74.5),
    AblationRow("+ L_cjs (all losses)", "loss",
                lambda c: {"triplet_weight": 1.0, "alpha": _alpha(c), "beta": _beta(c), "adaptive_margin": True}, 76.4),
    AblationRow("all prompt modules (base config)", "module", lambda c: {}, 76.4),
    AblationRow("without B_vt", "module", lambda c: {"use_b_vt": False}, 70.5),
    AblationRow("without B_t", "module", lambda c: {"use_b_t": False}, 72.8),
    AblationRow("without B_v", "module", lambda c: {"use_b_v": False}, 71.9),
    AblationRow("without any prompt module", "module",
                lambda c: {"use_b_t": False, "use_b_v": False, "use_b_vt": False}, 62.5),
)
"""The rows of SPEC §6, loss ablation first, then module ablation."""
ROW_NAMES = tuple(row.name for row in ROWS)


@dataclass
class AblationReport:
    """Per row: the config it trained, per-seed metrics, and their mean and spread (fractions)."""

    base: dict[str, Any]
    seeds: list[int]
    layernorm: list[str] = field(default_factory=lambda: ["trained"])
    """The LayerNorm regimes run, in order (the loss rows ran in the first only)."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    plain_clip: dict[str, dict[str, float]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def markdown(self) -> str:
        """The table in %: mean ± sample standard deviation over the seeds, ZS mAP@all per seed, and
        the paper's number; one line per (row, LayerNorm regime)."""
        seeds = ", ".join(map(str, self.seeds))
        lines = [f"| ablation | setting | LayerNorms | {' | '.join(c[2] for c in _COLUMNS)} | ZS mAP@all per seed "
                 "| paper mAP@200 (Sketchy split 2) |",
                 "| --- | --- | --- |" + " ---: |" * (len(_COLUMNS) + 2)]
        plain = [format_mean_spread(self.plain_clip[m][k], None) for m, k, _ in _COLUMNS]
        lines.append(f"| - | tiny CLIP, no prompts, untrained | - | {' | '.join(plain)} | | |")
        for row in self.rows:
            cells = [format_mean_spread(row["mean"][m][k], row["spread"][m][k]) for m, k, _ in _COLUMNS]
            per_seed = ", ".join(f"{100 * row['per_seed'][str(s)]['zs']['map_all']:.1f}" for s in self.seeds)
            paper = "" if row["paper"] is None else f"{row['paper']:.1f}"
            lines.append(f"| {row['group']} | {row['name']} | {row['layernorm']} | {' | '.join(cells)} | {per_seed} "
                         f"| {paper} |")
        return "\n".join(lines) + f"\n\nmean ± spread (sample std) over seeds {seeds}; in %.\n"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def row_config(base: SpLIPConfig, row: AblationRow) -> SpLIPConfig:
    """The SpLIPConfig of `row`: the base config with the row's overrides."""
    return dataclasses.replace(base, **row.overrides(base))


def select_rows(names: Sequence[str] | None) -> list[AblationRow]:
    """ROWS, or those named (in ROWS order); an unknown name lists the valid ones."""
    if not names:
        return list(ROWS)
    unknown = [n for n in names if n not in ROW_NAMES]
    if unknown:
        raise SpLIPError(f"unknown ablation rows {unknown}; choose from {list(ROW_NAMES)}")
    return [row for row in ROWS if row.name in names]


def select_regimes(layernorm: str | Sequence[str]) -> list[str]:
    """The LayerNorm regimes of `layernorm` ("trained", "frozen", "both" or a sequence of the first
    two), in LAYERNORM_REGIMES order unless a sequence gives another."""
    names = list(LAYERNORM_REGIMES) if layernorm == "both" else [layernorm] if isinstance(layernorm, str) \
        else list(layernorm)
    unknown = [n for n in names if n not in LAYERNORM_REGIMES]
    if unknown or not names:
        raise SpLIPError(f"unknown LayerNorm regime {unknown or names}; choose from {[*LAYERNORM_REGIMES, 'both']}")
    return names


def regime_train(train: TrainConfig, regime: str) -> TrainConfig:
    """`train` with the LayerNorm learning rate of `regime` (0 when frozen)."""
    return train if regime == "trained" else dataclasses.replace(train, lr_layernorm=0.0)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run_ablation(base: SpLIPConfig, train: TrainConfig, out: str | Path, seeds: Sequence[int] = (0, 1, 2),
                 rows: Sequence[str] | None = None, progress: bool = True,
                 layernorm: str | Sequence[str] = "trained") -> AblationReport:
    """Train and score every row of `rows` (default: all of ROWS) for every seed and LayerNorm
    regime (`layernorm`: trained, frozen or both; the loss rows in the first regime only) on
    `train`'s dataset and split (its `out` is replaced by OUT/runs/<regime>/<row>/seed<k>); write
    OUT/ablation.md and OUT/ablation.json; return the report. Rows whose configs coincide are
    trained once."""
    from tqdm import tqdm

    from splip_engine.io_utils import write_text_atomic
    from splip_engine.model import build_model
    from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest

    if not seeds:
        raise SpLIPError("no seeds given: pass at least one, e.g. --seeds 0,1,2")
    selected = select_rows(rows)
    regimes = select_regimes(layernorm)
    plan = [(regime, row) for regime in regimes for row in selected if row.group == "module" or regime == regimes[0]]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    folder, seen, unseen = _dataset(train)
    plain = build_model(dataclasses.replace(base, prompts=False))
    report = AblationReport(base=base.to_dict(), seeds=list(seeds), layernorm=regimes,
                            plain_clip=_score(TorchEncoder(plain, model_manifest(plain)), folder, seen, unseen))
    runs_by_config: dict[str, Path] = {}

    def key(regime: str, cfg: SpLIPConfig) -> str:
        return json.dumps([regime, cfg.to_dict()], sort_keys=True)

    jobs = [(regime, row, seed) for regime, row in plan for seed in seeds]
    for regime, row, seed in tqdm(jobs, desc="ablation", unit="run", disable=not progress):
        cfg = dataclasses.replace(row_config(base, row), seed=seed)
        run_dir = runs_by_config.setdefault(key(regime, cfg), out / "runs" / regime / _slug(row.name) / f"seed{seed}")
        _train_and_score(cfg, dataclasses.replace(regime_train(train, regime), out=str(run_dir), seed=seed),
                         folder, seen, unseen)
    for regime, row in plan:
        config = row_config(base, row)
        per_seed = [json.loads((runs_by_config[key(regime, dataclasses.replace(config, seed=seed))] / METRICS_FILE)
                               .read_text()) for seed in seeds]
        mean, spread = mean_and_spread(per_seed)
        report.rows.append({"name": row.name, "group": row.group, "layernorm": regime, "paper": row.paper,
                            "overrides": row.overrides(base), "lr_layernorm": regime_train(train, regime).lr_layernorm,
                            "mean": mean, "spread": spread, "per_seed": dict(zip(map(str, seeds), per_seed))})
    report.files = {name: str(out / name) for name in TABLE_FILES}
    write_text_atomic(out / TABLE_FILES[0], report.markdown())
    write_text_atomic(out / TABLE_FILES[1], json.dumps(report.to_dict(), indent=2))
    return report


def _dataset(train: TrainConfig):
    folder = train.data_source().open_folder()
    seen, unseen = folder.split_classes(train.split)
    return folder, seen, unseen


def _score(encoder, folder, seen: list[str], unseen: list[str]) -> dict[str, dict[str, float]]:
    """ZS and GZS metrics of `encoder` on the unseen classes (GZS gallery: seen + unseen photos)."""
    from splip_engine.protocol import evaluate_protocol

    metrics = evaluate_protocol(encoder, folder.subset(unseen), folder.subset(seen), modes=("zs", "gzs"))
    metrics.pop("_meta")
    return metrics


def _train_and_score(cfg: SpLIPConfig, train: TrainConfig, folder, seen: list[str], unseen: list[str]) -> None:
    """Train one run into `train.out` (continuing an interrupted one) and write its metrics file;
    nothing to do when that file exists."""
    from splip_engine.checkpoint import load_checkpoint
    from splip_engine.io_utils import write_text_atomic
    from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest
    from splip_engine.train import STATE_FILE, run_train

    run_dir = Path(train.out)
    if (run_dir / METRICS_FILE).is_file():
        return
    report = run_train(cfg, train, resume=(run_dir / STATE_FILE).exists(), progress=False)
    model = load_checkpoint(report.checkpoint)
    metrics = _score(TorchEncoder(model, model_manifest(model)), folder, seen, unseen)
    write_text_atomic(run_dir / METRICS_FILE, json.dumps(metrics, indent=2))
