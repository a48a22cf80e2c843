"""A quickly pre-trained tiny CLIP, standing in for downloaded CLIP weights where none can be had
(tests, the offline demo). Like real CLIP it learns images against captions ("a photo of a
{class}", "a clip art of a {class}", ...); what it is shown decides the domain gap SpLIP must
close (the demo shows it photos and clip-art, never a free-hand sketch)."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from splip_engine.errors import SpLIPError
from splip_engine.io_utils import write_with_atomic

logger = logging.getLogger(__name__)


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/8 of the side, on a (B, 3, S, S) batch."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    pad = images.shape[-1] // 8
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx, dy = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=generator))
    return padded[..., dy:dy + images.shape[-2], dx:dx + images.shape[-1]]


def _load_folder(root: Path, modality: str, classes: list[str], spec) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of ROOT/<class>/* decoded once: pixels (N, 3, S, S) and class labels (N,)."""
    from splip_engine.data.folder import IMAGE_EXTENSIONS
    from splip_engine.data.transforms import preprocess_batch

    items = [(p, label) for label, name in enumerate(classes) if (root / name).is_dir()
             for p in sorted((root / name).iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS]
    pixels, errors = preprocess_batch([p for p, _ in items], modality, spec)
    bad = {i for i, _ in errors}
    return torch.from_numpy(pixels), torch.tensor([label for i, (_, label) in enumerate(items) if i not in bad])


def pretrain_clip(roots: Mapping[str, str | Path], out_file: str | Path, clip_model: str = "tiny",
                  steps: int = 600, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                  progress: bool = True) -> Path:
    """Train all of `clip_model` (random init) contrastively on the images of each `roots` entry,
    KIND -> ROOT/<class>/*, against the captions "a {KIND} of a {class}", plus a term that keeps the
    captions apart (without it the random text tower's near-identical captions stall the loss at
    ln(#captions) for hundreds of steps); write its state dict to `out_file` (usable as
    `pretrained=`). E.g. roots={"photo": ..., "clip art": ...} (`make_clipart_corpus`)."""
    import open_clip
    from tqdm import tqdm

    from splip_engine.cpu_threads import intra_op_threads, torch_threads
    from splip_engine.data.transforms import PreprocessSpec
    from splip_engine.model.backbone import create_clip
    from splip_engine.model.splip import cut_at_eot, encode_text_ids

    if not roots:
        raise SpLIPError("pretrain_clip needs at least one image folder (roots={'photo': PHOTO_ROOT, ...})")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    clip = create_clip(clip_model, "").train()
    first = Path(next(iter(roots.values())))
    classes = sorted(d.name for d in first.iterdir() if d.is_dir() and not d.name.startswith("."))
    spec = PreprocessSpec(image_size=int(clip.visual.image_size[0]))
    parts = []
    for k, root in enumerate(roots.values()):  # kind k's captions are k * C .. (k + 1) * C - 1
        pixels, labels = _load_folder(Path(root), "photo", classes, spec)  # square images: a plain resize
        parts.append((pixels, labels + k * len(classes)))
    images = torch.cat([p for p, _ in parts])  # (N, 3, S, S)
    labels = torch.cat([y for _, y in parts])  # (N,) caption index
    captions = cut_at_eot(open_clip.get_tokenizer(clip_model)(
        [f"a {kind} of a {n.replace('_', ' ')}" for kind in roots for n in classes]))  # (K * C, L): causal, cut
    caption_ids = torch.arange(len(captions))  # each caption its own class: keeps captions apart
    decay = [p for p in clip.parameters() if p.ndim >= 2]  # matrices only: no decay on gains,
    no_decay = [p for p in clip.parameters() if p.ndim < 2]  # biases and the logit scale (temperature)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, fused=True)  # one kernel per step, not ~10 ops per tensor (2x here)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    with torch_threads(intra_op_threads(clip_model)):  # see splip_engine/cpu_threads.py
        for step in tqdm(range(steps), desc="pretrain tiny CLIP", unit="step", disable=not progress):
            batch = torch.randint(len(images), (batch_size,), generator=generator)
            image_features = F.normalize(clip.encode_image(_augment(images[batch], generator)), dim=-1)  # (B, D)
            text_features = encode_text_ids(clip, captions)  # (K * C, D), L2-normalised
            logits = clip.logit_scale.exp() * image_features @ text_features.T  # (B, K * C)
            caption_logits = clip.logit_scale.exp() * text_features @ text_features.T  # (K * C, K * C)
            loss = F.cross_entropy(logits, labels[batch]) + F.cross_entropy(caption_logits, caption_ids)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if step % 250 == 0:
                logger.info("pretrain step %d: loss %.4f", step, loss.item())
    logger.info("pretrained %s on %d images of %d classes (%s): final loss %.4f", clip_model, len(images),
                len(classes), ", ".join(roots), loss.item())
    write_with_atomic(out_file, lambda tmp: torch.save(clip.state_dict(), tmp))
    return Path(out_file)
