"""Decode + preprocess speed per core, before (full decode, then resize) and after the JPEG draft
(DCT-domain downscaling first), and what the draft costs in accuracy: ViT-B-32 (random weights)
photo embeddings of draft-decoded vs fully decoded photos, min cosine and top-10 agreement.

    .venv/bin/python benchmarks/bench_decode.py --out benchmarks/results/decode.json

Speed is CPU seconds of one process (`time.process_time`), best of `--rounds` passes over the
photos, draft and full interleaved per pass, so both see the same machine. Photos are photo-like
JPEGs (benchmarks/shard_data.py, quality 90) of 64 x 64 (model 32 px, the tiny engine of the 1M
run), 256 x 192, 640 x 480 and 2048 x 1536 (model 224 px).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from shard_data import photo_jpeg  # noqa: E402

from splip_engine.data.images import load_image  # noqa: E402
from splip_engine.data.transforms import PreprocessSpec, _geometry, normalise_batch  # noqa: E402

VARIANTS = {"full": None, "draft": 1, "draft_gap2": 2}
"""Decoded size asked of the JPEG draft, in multiples of the model size: None = no draft (before),
1 = the engine's preprocessing (after), 2 = PIL thumbnail's default reducing_gap, for comparison."""
SIZES = {"64": ((64, 64), 32), "256": ((256, 192), 224), "640": ((640, 480), 224), "2048": ((2048, 1536), 224)}
COUNTS = {"64": 2000, "256": 400, "640": 120, "2048": 24}  # photos timed per pass


def decode(photo: bytes, spec: PreprocessSpec, gap: int | None) -> np.ndarray:
    """(S, S, 3) uint8: `preprocess_uint8` with the draft asked for `gap` x the model size."""
    draft = None if gap is None else (gap * spec.image_size, gap * spec.image_size)
    return np.asarray(_geometry("photo")(load_image(photo, draft_size=draft), spec.image_size))


def time_per_image(photos: list[bytes], spec: PreprocessSpec, rounds: int) -> dict[str, float]:
    """{variant: CPU seconds per photo} of decode + geometry + its share of normalise_batch."""
    best = dict.fromkeys(VARIANTS, float("inf"))
    for _ in range(rounds):
        for name, gap in VARIANTS.items():
            start = time.process_time()
            normalise_batch(np.stack([decode(p, spec, gap) for p in photos]), spec)
            best[name] = min(best[name], (time.process_time() - start) / len(photos))
    return best


def accuracy(photos: dict[str, list[bytes]], queries: list[bytes], spec: PreprocessSpec, k: int = 10) -> dict:
    """Per size and draft variant: min / mean cosine of its embedding vs the full decode's for each
    photo, and the mean overlap of the top-k among the photos for `queries` (full decode) under the
    two; plus, for scale, the median cosine between a photo and its nearest other photo."""
    import torch

    from splip_engine import SpLIPConfig, build_model

    torch.manual_seed(0)
    model = build_model(SpLIPConfig(clip_model="ViT-B-32", pretrained="")).eval()

    def embed(sources: list[bytes], gap: int | None) -> np.ndarray:
        pixels = normalise_batch(np.stack([decode(p, spec, gap) for p in sources]), spec)
        with torch.no_grad():
            return torch.cat([model.encode(torch.from_numpy(pixels[i:i + 16]), "photo")
                              for i in range(0, len(pixels), 16)]).numpy()

    query_emb = embed(queries, None)  # (Q, D)
    out = {}
    for size, sources in photos.items():
        full = embed(sources, None)  # (N, D) L2-normalised
        between = full @ full.T
        np.fill_diagonal(between, -1)
        top_full = np.argsort(-(query_emb @ full.T), axis=1, kind="stable")[:, :k]
        rows = {"photos": len(sources), "queries": len(queries), "nearest_other_median_cosine": float(np.median(between.max(1)))}
        for name, gap in VARIANTS.items():
            if gap is None:
                continue
            drafted = embed(sources, gap)
            cosine = (full * drafted).sum(axis=1)
            top = np.argsort(-(query_emb @ drafted.T), axis=1, kind="stable")[:, :k]
            pixels = np.mean([np.abs(decode(p, spec, None).astype(int) - decode(p, spec, gap).astype(int)).mean()
                              for p in sources])
            rows[name] = {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean()),
                          f"top{k}_agreement": float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_full, top)])),
                          "mean_abs_pixel_diff_0_255": float(pixels)}
        out[size] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/decode.json"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accuracy-photos", type=int, default=200, help="photos per size in the accuracy check")
    args = parser.parse_args()
    results: dict = {"speed": {}, "cpu": _cpu()}
    for size, ((width, height), model_size) in SIZES.items():
        photos = [photo_jpeg(seed, width, height) for seed in range(COUNTS[size])]
        seconds = time_per_image(photos, PreprocessSpec(image_size=model_size), args.rounds)
        results["speed"][size] = {"jpeg": f"{width}x{height}", "model_px": model_size,
                                  "kb": float(np.mean([len(p) for p in photos]) / 1024),
                                  **{f"{name}_ms": 1e3 * seconds[name] for name in VARIANTS},
                                  **{f"{name}_img_per_s_per_core": 1 / seconds[name] for name in VARIANTS},
                                  "speedup": seconds["full"] / seconds["draft"]}
        print(json.dumps({size: results["speed"][size]}), flush=True)
    start = time.perf_counter()
    photos = {size: [photo_jpeg(10_000 + seed, *SIZES[size][0]) for seed in range(args.accuracy_photos)]
              for size in ("256", "640", "2048")}
    queries = [photo_jpeg(20_000 + seed, 640, 480) for seed in range(64)]
    results["accuracy_vit_b32"] = accuracy(photos, queries, PreprocessSpec(image_size=224))
    results["accuracy_seconds"] = time.perf_counter() - start
    print(json.dumps(results["accuracy_vit_b32"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))


def markdown(results: dict) -> str:
    """The RESULTS.md tables."""
    lines = ["| JPEG | model px | before: full decode + resize | after: draft, then resize | speed-up | "
             "(draft to 2x model px) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in results["speed"].values():
        cells = [f"{row[f'{name}_img_per_s_per_core']:.0f} img/s ({row[f'{name}_ms']:.2f} ms)" for name in VARIANTS]
        lines.append(f"| {row['jpeg']} ({row['kb']:.0f} KB) | {row['model_px']} | {cells[0]} | {cells[1]} | "
                     f"{row['speedup']:.2f}x | {cells[2]} |")
    lines += ["", "| JPEG | draft to | min cosine | mean cosine | top-10 agreement | mean abs pixel diff (0-255) | "
              "nearest other photo (median cosine) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for size, rows in results["accuracy_vit_b32"].items():
        for name, label in (("draft", "model px"), ("draft_gap2", "2x model px")):
            row = rows[name]
            lines.append(f"| {results['speed'][size]['jpeg']} | {label} | {row['min_cosine']:.5f} | "
                         f"{row['mean_cosine']:.5f} | {row['top10_agreement']:.3f} | "
                         f"{row['mean_abs_pixel_diff_0_255']:.2f} | {rows['nearest_other_median_cosine']:.5f} |")
    return "\n".join(lines)


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    main()
