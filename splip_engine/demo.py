"""The main job on an embedded default, offline: mini dataset -> tiny CLIP -> SpLIP training ->
`export --fp16` -> embed the gallery -> FAISS index -> search unseen sketches -> metrics + HTML."""
from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from splip_engine.errors import SpLIPError
from splip_engine.summary import format_mean_spread, mean_and_spread

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and recipe of the demo; the defaults run in a few minutes on a 2-core CPU. The SpLIP
    recipe (epochs, learning rates, loss weights) was chosen on class-disjoint folds of the seen
    classes, never on the unseen ones (README, "What the stand-in CLIP saw"): there the adaptive
    margin cost 2 points and L_cjs changed nothing while doubling the step time, so both are off
    here (`splip-engine ablate` measures each)."""

    out: str = "demo_out"
    classes: int = 24
    per_class: int = 24
    seed: int = 0
    """Seed of the dataset and of the stand-in CLIP (the "downloaded weights": one per demo)."""
    seeds: int = 3
    """SpLIP training runs, seeds `seed` .. `seed + seeds - 1`; the report gives mean and spread."""
    corpus_per_class: int = 64
    pretrain_steps: int = 3000
    epochs: int = 24
    batch_size: int = 32
    lr: float = 1e-2
    lr_layernorm: float = 3e-2
    alpha: float = 0.1
    beta: float = 0.0
    adaptive_margin: bool = False
    workers: int = 1
    top_k: int = 10
    html_queries: int = 12

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise SpLIPError(f"--seeds {self.seeds}: must be >= 1")


@dataclass
class DemoReport:
    """Metrics per model and setting (mean over the training seeds, and their spread), where
    everything was written, and per-stage seconds."""

    out: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    """model -> setting (zs / gzs / fg) -> metric -> mean over the seeds (fractions)."""
    spread: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Like `metrics`: the sample standard deviation over the seeds (0 for a single seed)."""
    per_seed: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    """seed -> model -> setting -> metrics of that seed's run."""
    files: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    export: list[str] = field(default_factory=list)
    serve_command: str = ""
    """The command that serves the demo's index with the draw-to-search page."""

    def table(self) -> str:
        """The ZS / GZS / FG metrics per model as a Markdown table (in %, mean ± spread)."""
        rows = ["| model | setting | mAP@all | mAP@200 | P@100 | P@200 | Acc@1 | Acc@5 |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        keys = ("map_all", "map_200", "prec_100", "prec_200", "acc_1", "acc_5")
        for model, by_mode in self.metrics.items():
            for mode, values in by_mode.items():
                spread = self.spread.get(model, {}).get(mode, {})
                cells = [format_mean_spread(values[k], spread.get(k)) if k in values else "" for k in keys]
                rows.append(f"| {model} | {mode.upper()} | " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def caption(self) -> str:
        """What the table's numbers are: the seeds, what ± means, the queries and gallery of each setting."""
        seeds = list(self.per_seed)
        sizes = next(iter(self.metrics.values()))

        def count(mode: str, key: str) -> int:
            return round(sizes.get(mode, {}).get(key, 0))

        spread = (f"mean ± sample standard deviation over {len(seeds)} SpLIP training seeds ({', '.join(seeds)})"
                  if len(seeds) > 1 else f"one SpLIP training seed ({seeds[0]}), so no spread")
        return (f"In %, {spread}; plain CLIP is not trained, so its spread is 0. Queries: the "
                f"{count('zs', 'n_queries')} sketches of the unseen classes. Galleries: ZS ranks the "
                f"{count('zs', 'n_gallery')} photos of the unseen classes; GZS ranks {count('gzs', 'n_gallery')} photos, "
                f"those of the seen classes too; FG-ZS ranks, of the {count('fg', 'n_gallery')} unseen-class photos, "
                f"those of the sketch's class for its paired photo ({count('fg', 'n_queries')} paired sketches; "
                "Acc@1 / @5). mAP@200 equals mAP@all on a gallery of 200 photos or fewer.")


@contextmanager
def _stage(report: DemoReport, name: str) -> Iterator[None]:
    start = time.perf_counter()
    logger.info("demo: %s", name)
    yield
    report.seconds[name] = round(report.seconds.get(name, 0.0) + time.perf_counter() - start, 1)


STAND_IN_KINDS = ("photo", "clip art")
"""What the stand-in CLIP is pre-trained on (captioned "a photo of a ...", "a clip art of a ...").
"line drawing" (clean outlines, the style closest to the sketches) is left out to keep the gap (README)."""
PLAIN, UNTRAINED = "CLIP, no prompts (torch)", "SpLIP untrained (torch)"


def run_demo(cfg: DemoConfig = DemoConfig(), progress: bool = True) -> DemoReport:
    """Run the whole pipeline into `cfg.out` and return the report (also report.json, report.md),
    torch on the intra-op threads a tiny model wants (splip_engine/cpu_threads.py)."""
    from splip_engine.cpu_threads import intra_op_threads, torch_threads

    with torch_threads(intra_op_threads("tiny", cfg.workers)):
        return _run_demo(cfg, progress)


def _run_demo(cfg: DemoConfig, progress: bool) -> DemoReport:
    from splip_engine.config import SpLIPConfig
    from splip_engine.data.folder import SBIRFolder
    from splip_engine.data.mini import make_clipart_corpus, make_mini_dataset
    from splip_engine.export import export_engines
    from splip_engine.index import GalleryIndex, open_store
    from splip_engine.io_utils import write_text_atomic
    from splip_engine.model import build_model
    from splip_engine.pretrain import pretrain_clip
    from splip_engine.protocol import evaluate_protocol
    from splip_engine.retrieval import search_images
    from splip_engine.serve.results_page import write_results_html
    from splip_engine.runtime import load_engine
    from splip_engine.runtime.embed_job import run_embed
    from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest
    from splip_engine.train import TrainConfig, run_train

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise SpLIPError(f"{out} is not empty: pass another --out or remove it")
    report = DemoReport(out=str(out))
    with _stage(report, "mini dataset + pre-training corpus"):
        data = make_mini_dataset(out / "data", classes=cfg.classes, per_class=cfg.per_class, seed=cfg.seed)
        corpus = make_clipart_corpus(out / "pretrain_data", classes=cfg.classes, per_class=cfg.corpus_per_class,
                                     seed=cfg.seed, kinds=STAND_IN_KINDS)
    with _stage(report, "pretrain tiny CLIP"):
        # The stand-in for web CLIP sees photos and clip-art of every class with captions, never a
        # free-hand sketch: the sketch/photo gap is SpLIP's to close. "Unseen" means unseen by SpLIP.
        clip_file = pretrain_clip(corpus.roots, out / "tiny_clip.pt",
                                  steps=cfg.pretrain_steps, seed=cfg.seed, progress=progress)
    folder = SBIRFolder(data.sketch_root, data.photo_root)
    seen, unseen = folder.split_classes(data.unseen_file)
    model_cfg = SpLIPConfig(clip_model="tiny", pretrained=str(clip_file), alpha=cfg.alpha, beta=cfg.beta,
                            adaptive_margin=cfg.adaptive_margin)

    def evaluate(encoder) -> dict[str, Any]:
        metrics = evaluate_protocol(encoder, folder.subset(unseen), folder.subset(seen))
        metrics.pop("_meta")
        return metrics

    with _stage(report, "evaluate"):
        plain = build_model(dataclasses.replace(model_cfg, prompts=False))
        plain_metrics = evaluate(TorchEncoder(plain, model_manifest(plain)))
    encoder = None
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        run = {PLAIN: plain_metrics}
        seed_cfg = dataclasses.replace(model_cfg, seed=seed)
        with _stage(report, "evaluate"):
            untrained = build_model(seed_cfg)
            run[UNTRAINED] = evaluate(TorchEncoder(untrained, model_manifest(untrained)))
        with _stage(report, "train"):
            train_cfg = TrainConfig(sketch_root=str(data.sketch_root), photo_root=str(data.photo_root),
                                    split=str(data.unseen_file), out=str(out / "runs" / f"seed{seed}"),
                                    epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                                    lr_layernorm=cfg.lr_layernorm, workers=cfg.workers, seed=seed)
            trained = run_train(seed_cfg, train_cfg, progress=progress)
        engines = out / "engines" if seed == cfg.seed else out / "runs" / f"seed{seed}" / "engines"
        with _stage(report, "export --fp16"):
            exported = export_engines(trained.checkpoint, engines, fp16=True)
            if not exported:
                raise SpLIPError("demo export failed its checks: " + "; ".join(exported.errors))
        seed_encoder = load_engine(engines, backend="auto", device="cpu")
        with _stage(report, "evaluate"):
            name = f"SpLIP trained ({seed_encoder.backend}, {seed_encoder.manifest.get('precision')})"
            run[name] = evaluate(seed_encoder)
        if encoder is None:  # the first seed's engine serves the gallery below
            encoder, checkpoint, report.export = seed_encoder, trained.checkpoint, exported.lines()
        report.per_seed[str(seed)] = run
    for model in report.per_seed[str(cfg.seed)]:
        report.metrics[model], report.spread[model] = mean_and_spread([r[model] for r in report.per_seed.values()])

    with _stage(report, "embed gallery"):
        run_embed(encoder, data.photo_root, out / "store", modality="photo", progress=progress)
    with _stage(report, "index"):
        index = GalleryIndex.build_from_store(open_store(out / "store"), kind="auto")
        index.save(out / "index")
    with _stage(report, "search"):
        queries = [str(p) for name in unseen for p in folder.sketches[name][:1]]
        queries += [str(p) for name in unseen for p in folder.sketches[name][1:2]]
        results = search_images(encoder, index, queries[:cfg.html_queries], k=cfg.top_k)
        relevant = {r["query"]: {i for i in index.ids if i.split("/")[0] == Path(r["query"]).parent.name}
                    for r in results}
        about = [f"Gallery: all {len(index)} photos of the {cfg.classes} classes, seen and unseen (the GZS "
                 f"setting of report.md, not its ZS one, which ranks the unseen classes' photos only).",
                 f"Model: SpLIP trained on the {len(seen)} seen classes (training seed {cfg.seed}, "
                 f"{encoder.backend} {encoder.manifest.get('precision')} engine) on the stand-in tiny CLIP; queries: {len(results)} sketches of the unseen classes "
                 f"({', '.join(unseen)}), top {cfg.top_k} each."]
        write_results_html(results, out / "results.html", title="SpLIP demo: unseen-class sketches -> gallery",
                           relevant=relevant, about=about)
        write_text_atomic(out / "search.json", json.dumps(results, indent=2))
    report.files = {"dataset": str(data.root), "pretraining corpus": str(corpus.root), "stand-in CLIP": str(clip_file),
                    "checkpoint": checkpoint, "engines": str(out / "engines"), "store": str(out / "store"),
                    "index": str(out / "index"), "results_page": str(out / "results.html"),
                    "report": str(out / "report.json")}
    write_text_atomic(out / "report.json", json.dumps(
        {"metrics": report.metrics, "spread": report.spread, "per_seed": report.per_seed, "files": report.files,
         "seconds": report.seconds, "export": report.export, "config": dataclasses.asdict(cfg)}, indent=2))
    write_text_atomic(out / "report.md", report.table() + "\n\n" + report.caption() + "\n")
    report.serve_command = shlex.join(["splip-engine", "serve", "--engine", str(out / "engines"),
                                       "--index", str(out / "index"), "--store", str(out / "store")])
    return report
