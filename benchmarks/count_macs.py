"""Count parameters and MACs per image of the SpLIP sketch encoder vs plain CLIP's image encoder.

Convention: torch.utils.flop_counter counts matmul/conv/SDPA FLOPs; 1 MAC = 2 FLOP; LayerNorm,
softmax, GELU and additions are not counted (the usual convention: ViT-B/32 image tower =
4.41 GMACs = 8.8 GFLOP at 224 px).

    python benchmarks/count_macs.py --clip-model ViT-B-32 --out benchmarks/macs.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from splip_engine import SpLIPConfig, build_model

SPLITS = Path(__file__).resolve().parents[1] / "splip_engine" / "data" / "splits"


def count_encoder(cfg: SpLIPConfig, batch: int = 2) -> dict:
    """MACs per image of `encode(x, "sketch")` and the parameter counts of the model `cfg` builds."""
    model = build_model(cfg).eval()
    images = torch.randn(batch, 3, model.image_size, model.image_size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.encode(images, "sketch")
    return {"gmacs_per_image": counter.get_total_flops() / 2 / batch / 1e9, **model.parameter_counts()}


def seen_classes() -> tuple[str, ...]:
    path = SPLITS / "seen_sketchy.txt"
    if path.is_file():
        return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    return tuple(f"class {i}" for i in range(100))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-model", default="ViT-B-32")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = parser.parse_args()
    base = SpLIPConfig(clip_model=args.clip_model, pretrained="")
    rows = {
        "CLIP image encoder (prompts=False)": count_encoder(dataclasses.replace(base, prompts=False)),
        "SpLIP sketch encoder, vt_context=template": count_encoder(base),
        "SpLIP sketch encoder, vt_context=classes (100 Sketchy seen classes)": count_encoder(
            dataclasses.replace(base, vt_context="classes", seen_classes=seen_classes())
        ),
    }
    print(f"{args.clip_model}: GMACs per image (1 MAC = 2 FLOP; matmul/conv/attention only)")
    print("| encoder | GMACs/image | params total | params trainable |\n| --- | ---: | ---: | ---: |")
    for name, r in rows.items():
        print(f"| {name} | {r['gmacs_per_image']:.3f} | {r['total']:,} | {r['trainable']:,} |")
    if args.out:
        args.out.write_text(json.dumps({"clip_model": args.clip_model, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
