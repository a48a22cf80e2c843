"""A quickly pre-trained tiny CLIP, standing in for downloaded CLIP weights where none can be had
(tests, the offline demo). Like real CLIP it learns photos against class-name captions and never
sees a sketch, so the sketch -> photo gap is left for SpLIP's prompts to bridge."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from splip_engine.io_utils import write_with_atomic

logger = logging.getLogger(__name__)


def pretrain_clip(photo_root: str | Path, out_file: str | Path, clip_model: str = "tiny", epochs: int = 30,
                  batch_size: int = 64, lr: float = 2e-3, seed: int = 0, progress: bool = True) -> Path:
    """Train all of `clip_model` (random init) contrastively on PHOTO_ROOT/<class>/* photos against
    "a photo of a {class}" captions; write its state dict to `out_file` (a `pretrained=` file)."""
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from splip_engine.data.datasets import ImageDataset, collate_skip_bad
    from splip_engine.data.folder import IMAGE_EXTENSIONS
    from splip_engine.data.transforms import PreprocessSpec, train_transform
    from splip_engine.model.backbone import create_clip

    torch.manual_seed(seed)
    import open_clip

    clip = create_clip(clip_model, "").train()
    tokenizer = open_clip.get_tokenizer(clip_model)
    classes = sorted(d.name for d in Path(photo_root).iterdir() if d.is_dir() and not d.name.startswith("."))
    items = [(p, label) for label, name in enumerate(classes) for p in sorted((Path(photo_root) / name).iterdir())
             if p.suffix.lower() in IMAGE_EXTENSIONS]
    spec = PreprocessSpec(image_size=int(clip.visual.image_size[0]))
    loader = DataLoader(ImageDataset(items, train_transform("photo", spec)), batch_size=batch_size, shuffle=True,
                        collate_fn=collate_skip_bad, generator=torch.Generator().manual_seed(seed))
    captions = tokenizer([f"a photo of a {name.replace('_', ' ')}" for name in classes])  # (C, 77)
    optimizer = torch.optim.AdamW(clip.parameters(), lr=lr, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader))
    for epoch in tqdm(range(epochs), desc="pretrain tiny CLIP", unit="epoch", disable=not progress):
        for batch in loader:
            if batch["size"] == 0:
                continue
            image_features = F.normalize(clip.encode_image(batch["image"]), dim=-1)  # (B, D)
            text_features = F.normalize(clip.encode_text(captions), dim=-1)  # (C, D)
            logits = clip.logit_scale.exp() * image_features @ text_features.T  # (B, C)
            loss = F.cross_entropy(logits, batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        logger.info("pretrain epoch %d: loss %.4f", epoch + 1, float(loss))
    write_with_atomic(out_file, lambda tmp: torch.save(clip.state_dict(), tmp))
    return Path(out_file)
