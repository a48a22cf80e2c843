"""The main job on an embedded default, offline: mini dataset -> tiny CLIP -> SpLIP training ->
`export --fp16` -> embed the gallery -> FAISS index -> search unseen sketches -> metrics + HTML."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from splip_engine.errors import SpLIPError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults run in a few minutes on a 2-core CPU."""

    out: str = "demo_out"
    classes: int = 16
    per_class: int = 24
    seed: int = 0
    pretrain_steps: int = 2000
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-2
    lr_layernorm: float = 1e-2
    top_k: int = 10
    html_queries: int = 12


@dataclass
class DemoReport:
    """Metrics (trained vs untrained), where everything was written, and per-stage seconds."""

    out: str
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    export: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The ZS / GZS / FG metrics, untrained vs trained, as a Markdown table (in %)."""
        rows = ["| model | setting | mAP@all | mAP@200 | P@100 | P@200 | Acc@1 | Acc@5 |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        keys = ("map_all", "map_200", "prec_100", "prec_200", "acc_1", "acc_5")
        for model, by_mode in self.metrics.items():
            for mode, values in by_mode.items():
                cells = [f"{100 * values[k]:.1f}" if k in values else "" for k in keys]
                rows.append(f"| {model} | {mode.upper()} | " + " | ".join(cells) + " |")
        return "\n".join(rows)


@contextmanager
def _stage(report: DemoReport, name: str) -> Iterator[None]:
    start = time.perf_counter()
    logger.info("demo: %s", name)
    yield
    report.seconds[name] = round(time.perf_counter() - start, 1)


def run_demo(cfg: DemoConfig = DemoConfig(), progress: bool = True) -> DemoReport:
    """Run the whole pipeline into `cfg.out` and return the report (also written as report.json)."""
    from splip_engine.config import SpLIPConfig
    from splip_engine.data.folder import SBIRFolder
    from splip_engine.data.mini import make_mini_dataset
    from splip_engine.export import export_engines
    from splip_engine.index import GalleryIndex, open_store
    from splip_engine.io_utils import write_text_atomic
    from splip_engine.model import build_model
    from splip_engine.pretrain import pretrain_clip
    from splip_engine.protocol import evaluate_protocol
    from splip_engine.retrieval import search_images, write_results_html
    from splip_engine.runtime import load_engine
    from splip_engine.runtime.embed_job import run_embed
    from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest
    from splip_engine.train import TrainConfig, run_train

    out = Path(cfg.out)
    if out.exists() and any(out.iterdir()):
        raise SpLIPError(f"{out} is not empty: pass another --out or remove it")
    report = DemoReport(out=str(out))
    with _stage(report, "mini dataset"):
        data = make_mini_dataset(out / "data", classes=cfg.classes, per_class=cfg.per_class, seed=cfg.seed)
    with _stage(report, "pretrain tiny CLIP"):
        # Like web-trained CLIP, the stand-in sees photos and drawings of every class with captions;
        # "unseen" means unseen by SpLIP training, as in the ZS-SBIR protocol.
        clip_file = pretrain_clip(data.photo_root, out / "tiny_clip.pt", sketch_root=data.sketch_root,
                                  steps=cfg.pretrain_steps, seed=cfg.seed, progress=progress)
    folder = SBIRFolder(data.sketch_root, data.photo_root)
    seen, unseen = folder.split_classes(data.unseen_file)
    model_cfg = SpLIPConfig(clip_model="tiny", pretrained=str(clip_file), seed=cfg.seed)

    with _stage(report, "evaluate untrained"):
        for name, cfg_ in (("CLIP, no prompts (torch)", dataclasses.replace(model_cfg, prompts=False)),
                           ("SpLIP untrained (torch)", model_cfg)):
            model = build_model(cfg_)
            metrics = evaluate_protocol(TorchEncoder(model, model_manifest(model)),
                                        folder.subset(unseen), folder.subset(seen))
            metrics.pop("_meta")
            report.metrics[name] = metrics
    with _stage(report, "train"):
        train_cfg = TrainConfig(sketch_root=str(data.sketch_root), photo_root=str(data.photo_root),
                                split=str(data.unseen_file), out=str(out / "run"), epochs=cfg.epochs,
                                batch_size=cfg.batch_size, lr=cfg.lr, lr_layernorm=cfg.lr_layernorm,
                                workers=0, seed=cfg.seed)
        trained = run_train(model_cfg, train_cfg, progress=progress)
    with _stage(report, "export --fp16"):
        exported = export_engines(trained.checkpoint, out / "engines", fp16=True)
        if not exported:
            raise SpLIPError("demo export failed its checks: " + "; ".join(exported.errors))
        report.export = exported.lines()
    encoder = load_engine(out / "engines", backend="auto", device="cpu")
    with _stage(report, "evaluate trained engine"):
        metrics = evaluate_protocol(encoder, folder.subset(unseen), folder.subset(seen))
        metrics.pop("_meta")
        report.metrics[f"SpLIP trained ({encoder.backend}, {encoder.manifest.get('precision')})"] = metrics
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
        write_results_html(results, out / "results.html", title="SpLIP demo: unseen-class sketches -> gallery",
                           relevant=relevant)
        write_text_atomic(out / "search.json", json.dumps(results, indent=2))
    report.files = {"dataset": str(data.root), "checkpoint": trained.checkpoint, "engines": str(out / "engines"),
                    "store": str(out / "store"), "index": str(out / "index"),
                    "results_page": str(out / "results.html"), "report": str(out / "report.json")}
    write_text_atomic(out / "report.json", json.dumps(
        {"metrics": report.metrics, "files": report.files, "seconds": report.seconds, "export": report.export},
        indent=2))
    write_text_atomic(out / "report.md", report.table() + "\n")
    return report
