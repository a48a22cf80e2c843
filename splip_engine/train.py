"""Training SpLIP prompts (SPEC.md §3): AdamW with two learning rates, warm-up + cosine, AMP on CUDA,
gradient clipping, a checkpoint every epoch, `--resume`, a JSONL log and validation mAP on
held-out images of the seen classes. The whole step is `train_step`, top to bottom."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from splip_engine.checkpoint import save_checkpoint
from splip_engine.config import SpLIPConfig
from splip_engine.cpu_threads import intra_op_threads, torch_threads
from splip_engine.errors import SpLIPError
from splip_engine.io_utils import write_text_atomic, write_with_atomic

if TYPE_CHECKING:
    from splip_engine.data.layouts import DataSource

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
LOG_FILE = "log.jsonl"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and data settings of one training run (the model's are in SpLIPConfig)."""

    dataset: str = ""
    """A distributed dataset's layout (sketchy, tuberlin, quickdraw: data/layouts.py) under `root`;
    empty: the generic `sketch_root` / `photo_root` class folders."""
    root: str = ""
    sketch_root: str = ""
    photo_root: str = ""
    split: str = ""
    """Unseen classes: a split name (sketchy25, ...) or a class list file."""
    out: str = "runs/splip"
    epochs: int = 60
    batch_size: int = 64
    triplets_per_epoch: int = 0
    """0 = one triplet per training sketch."""
    lr: float = 1e-3
    lr_layernorm: float = 1e-5
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    fine_grained: bool = False
    augment: bool = True
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    """Mixed precision (bf16 autocast) on CUDA; ignored on CPU."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)}: must be >= 1")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"TrainConfig.val_fraction={self.val_fraction}: must be in [0, 1)")

    def data_source(self) -> DataSource:
        """Where this run's dataset is (checked: a clear error when the fields are incomplete or mixed)."""
        from splip_engine.data.layouts import DataSource

        return DataSource(self.dataset, self.root, self.sketch_root, self.photo_root, self.split)


@dataclass
class TrainReport:
    """Outcome of a run: where the checkpoint is, and the validation mAP before and after."""

    checkpoint: str
    epochs_run: int
    val_map_initial: float
    val_map_final: float
    final_loss: float
    seconds: float
    bad_images: list[str]


def read_holdout(model_path: str | Path, fraction: float | None = None, seed: int | None = None,
                 ) -> tuple[float, int]:
    """(val_fraction, seed) the run that trained `model_path` held its seen-class validation part
    out with: the given values, else the run's train_config.json (in `model_path` or its parent,
    as `run_train` writes it), else TrainConfig's defaults."""
    if fraction is None or seed is None:
        for folder in (Path(model_path), Path(model_path).parent):
            if (folder / "train_config.json").is_file():
                saved = json.loads((folder / "train_config.json").read_text("utf-8")).get("train", {})
                fraction = saved.get("val_fraction") if fraction is None else fraction
                seed = saved.get("seed") if seed is None else seed
                break
    defaults = TrainConfig()
    return (defaults.val_fraction if fraction is None else float(fraction),
            defaults.seed if seed is None else int(seed))


def cosine_with_warmup(warmup_steps: int, total_steps: int):
    """LR multiplier: linear warm-up to 1 over `warmup_steps`, then cosine decay to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def build_optimizer(model, criterion, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW: mapping blocks and the jigsaw solver at `lr`, the towers' LayerNorms at `lr_layernorm`."""
    layernorm = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("clip.")]
    blocks = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("clip.")]
    groups = [{"params": blocks + list(criterion.parameters()), "lr": cfg.lr}]
    if layernorm:
        groups.append({"params": layernorm, "lr": cfg.lr_layernorm})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def train_step(model, criterion, batch: dict[str, Any], optimizer, scheduler, cfg: TrainConfig,
               device: torch.device, generator: torch.Generator) -> dict[str, float]:
    """One optimisation step on a batch of triplets (SPEC §2): encode, losses, backward, step."""
    from splip_engine.losses import shuffle_grid

    sketch, positive, negative = (batch[k].to(device, non_blocking=True) for k in ("sketch", "positive", "negative"))
    labels, negative_labels = batch["label"].to(device), batch["negative_label"].to(device)
    perm_labels, perms = criterion.sample_permutations(len(sketch), generator)  # y (B,), (B, 9)
    shuffled = shuffle_grid(sketch, perms)  # s': the anchor cut 3x3 and shuffled by y

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
        sketch_emb, sketch_tokens = model.encode_with_tokens(sketch, "sketch")  # (B, D), (B, N, Dv)
        positive_emb, positive_tokens = model.encode_with_tokens(positive, "photo")
        negative_emb, negative_tokens = model.encode_with_tokens(negative, "photo")
        shuffled_tokens = model.encode_with_tokens(shuffled, "sketch")[1] if model.cfg.beta > 0 else None
        losses = criterion(
            sketch_emb, positive_emb, negative_emb, labels=labels, negative_labels=negative_labels,
            sketch_tokens=sketch_tokens, positive_tokens=positive_tokens, negative_tokens=negative_tokens,
            shuffled_tokens=shuffled_tokens, perm_labels=perm_labels, fine_grained=cfg.fine_grained,
        )

    optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(
        [p for group in optimizer.param_groups for p in group["params"]], cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return {name: value.item() for name, value in losses.items()} | {"grad_norm": float(grad_norm)}


def _device(name: str) -> torch.device:
    from splip_engine.runtime.loader import resolve_device

    return torch.device(resolve_device(name))


def validation_map(model, split, batch_size: int) -> float:
    """mAP@all of held-out seen-class sketches against held-out seen-class photos."""
    from splip_engine.evaluation import retrieval_metrics
    from splip_engine.protocol import embed_part
    from splip_engine.runtime.torch_backend import TorchEncoder, model_manifest

    encoder = TorchEncoder(model, model_manifest(model), device=str(next(model.parameters()).device),
                           batch_size=batch_size)
    sketches, photos = embed_part(encoder, split, "sketch"), embed_part(encoder, split, "photo")
    model.train()
    if not len(sketches.labels) or not len(photos.labels):
        return float("nan")
    return float(retrieval_metrics(sketches.embeddings, sketches.labels, photos.embeddings, photos.labels)["map_all"])


def _save_state(out: Path, model, criterion, optimizer, scheduler, epoch: int, generator: torch.Generator) -> None:
    """Checkpoint (model) + training state (optimizer, scheduler, solver, RNG), each atomic."""
    save_checkpoint(model, out / "checkpoint")
    state = {"epoch": epoch, "criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
             "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}}
    write_with_atomic(out / STATE_FILE, lambda tmp: torch.save(state, tmp))


def _append_log(out: Path, record: dict[str, Any]) -> None:
    with open(out / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def run_train(model_cfg: SpLIPConfig, cfg: TrainConfig, resume: bool = False, progress: bool = True) -> TrainReport:
    """Train SpLIP prompts on the seen classes of `cfg`'s dataset; write checkpoints into `cfg.out`.
    On CPU with the intra-op thread count of `intra_op_threads` (a shared machine's cores)."""
    if _device(cfg.device).type != "cpu":
        return _run_train(model_cfg, cfg, resume, progress)
    with torch_threads(intra_op_threads(model_cfg.clip_model, cfg.workers)):
        return _run_train(model_cfg, cfg, resume, progress)


def _run_train(model_cfg: SpLIPConfig, cfg: TrainConfig, resume: bool, progress: bool) -> TrainReport:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from splip_engine.data.datasets import TripletDataset, collate_skip_bad
    from splip_engine.data.sampler import TripletSampler
    from splip_engine.data.transforms import PreprocessSpec, eval_transform, train_transform
    from splip_engine.export import record_latest_checkpoint
    from splip_engine.losses import SpLIPLoss
    from splip_engine.model import build_model

    start = time.perf_counter()
    out = Path(cfg.out)
    if (out / STATE_FILE).exists() and not resume:
        raise SpLIPError(f"{out} already holds a training run: pass --resume to continue it or another --out")
    torch.manual_seed(cfg.seed)
    device = _device(cfg.device)
    folder = cfg.data_source().open_folder()
    seen, unseen = folder.split_classes(cfg.split)
    train_split, val_split = folder.held_out(seen, cfg.val_fraction, seed=cfg.seed)
    if model_cfg.vt_context == "classes":
        model_cfg = dataclasses.replace(model_cfg, seen_classes=tuple(train_split.classes))
    model = build_model(model_cfg).to(device).train()

    spec = PreprocessSpec.for_model(model)
    make = train_transform if cfg.augment else eval_transform
    dataset = TripletDataset(train_split, make("sketch", spec), make("photo", spec))
    sampler = TripletSampler(train_split, seed=cfg.seed, fine_grained=cfg.fine_grained,
                             num_triplets=cfg.triplets_per_epoch or None)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, collate_fn=collate_skip_bad,
                        num_workers=cfg.workers, pin_memory=device.type == "cuda", drop_last=len(sampler) > cfg.batch_size,
                        persistent_workers=cfg.workers > 0)
    class_names = list(train_split.classes)
    criterion = SpLIPLoss(
        model_cfg,
        sketch_text_emb=model.class_text_embeddings(class_names, "a sketch of a {}"),
        photo_text_emb=model.class_text_embeddings(class_names, "a photo of a {}"),
        logit_scale=float(model.clip.logit_scale.exp()), vision_width=model.vision_width,
    ).to(device)
    optimizer = build_optimizer(model, criterion, cfg)
    steps_per_epoch = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(
        int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch))
    generator = torch.Generator().manual_seed(cfg.seed)

    first_epoch = 0
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / STATE_FILE).exists():
        state = torch.load(out / STATE_FILE, map_location=device, weights_only=False)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in state["trainable"]:
                    p.copy_(state["trainable"][name])
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        first_epoch = state["epoch"] + 1
        logger.info("resuming %s at epoch %d", out, first_epoch)
    write_text_atomic(out / "train_config.json", json.dumps(
        {"train": dataclasses.asdict(cfg), "model": model_cfg.to_dict(), "seen": seen, "unseen": unseen}, indent=2))

    val_initial = validation_map(model, val_split, cfg.batch_size)
    if first_epoch == 0:
        _append_log(out, {"epoch": 0, "val_map_all": val_initial, "untrained": True})
    val_map, loss = val_initial, float("nan")
    bad_images: set[str] = set()
    for epoch in range(first_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        totals: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
        for batch in bar:
            bad_images.update(b.path for b in batch.pop("bad", []))
            if batch["size"] < 2:
                continue
            stats = train_step(model, criterion, batch, optimizer, scheduler, cfg, device, generator)
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v
            totals["steps"] = totals.get("steps", 0) + 1
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
        steps = max(1, totals.pop("steps", 0))
        means = {k: v / steps for k, v in totals.items()}
        loss = means.get("loss", float("nan"))
        val_map = validation_map(model, val_split, cfg.batch_size)
        _save_state(out, model, criterion, optimizer, scheduler, epoch, generator)
        _append_log(out, {"epoch": epoch + 1, **means, "val_map_all": val_map, "lr": scheduler.get_last_lr()[0],
                          "bad_images": len(bad_images), "seconds": round(time.perf_counter() - start, 1)})
        logger.info("epoch %d: loss %.4f val mAP@all %.4f", epoch + 1, loss, val_map)
    record_latest_checkpoint(out / "checkpoint")
    return TrainReport(str(out / "checkpoint"), cfg.epochs - first_epoch, val_initial, val_map, loss,
                       time.perf_counter() - start, sorted(bad_images))
