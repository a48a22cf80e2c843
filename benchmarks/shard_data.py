"""Synthetic img2dataset output for the embedding benchmarks: webdataset tar shards written by
webdataset's own TarWriter (what img2dataset uses), each record `KEY.jpg` + `KEY.txt` + `KEY.json`,
plus img2dataset's `<shard>_stats.json`. Photos are smooth random fields with a little noise
(closer to a photo's JPEG cost than white noise), drawn from a pool and cycled.

    python benchmarks/shard_data.py --out /tmp/splip-1m --images 1000000 --shards 200 --size 64
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from PIL import Image

POOL = 2000  # distinct photos per shard writer, cycled


def photo_jpeg(seed: int, width: int, height: int, quality: int = 90) -> bytes:
    """A photo-like JPEG: a smooth random colour field (bicubic from 1/8 size) plus mild noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(height // 8, 2), max(width // 8, 2), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
    pixels = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _write_shard(args: tuple[Path, int, int, int, int]) -> int:
    import webdataset as wds

    out, shard, start, count, size = args
    pool = [photo_jpeg(shard * POOL + i, size, size) for i in range(min(POOL, count))]
    path = out / f"{shard:05d}.tar"
    with wds.TarWriter(str(path)) as writer:
        for i in range(count):
            key = f"{start + i:09d}"
            meta = {"key": key, "url": f"https://example.com/{key}.jpg", "caption": f"photo {key}",
                    "status": "success", "width": size, "height": size}
            writer.write({"__key__": key, "jpg": pool[i % len(pool)], "txt": meta["caption"], "json": json.dumps(meta)})
    (out / f"{shard:05d}_stats.json").write_text(json.dumps({"count": count, "successes": count}))
    return count


def write_shards(out: Path, images: int, shards: int, size: int, processes: int = 2) -> float:
    """Write `images` records into `shards` shards under `out`; returns seconds taken."""
    out.mkdir(parents=True, exist_ok=True)
    per = -(-images // shards)
    jobs = [(out, s, s * per, min(per, images - s * per), size) for s in range(shards) if s * per < images]
    start = time.perf_counter()
    with mp.get_context("fork").Pool(processes) as pool:
        written = sum(pool.imap_unordered(_write_shard, jobs))
    assert written == images
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--size", type=int, default=64, help="photo side in px")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    seconds = write_shards(args.out, args.images, args.shards, args.size, args.processes)
    print(f"wrote {args.images:,} records in {args.shards} shards to {args.out} in {seconds:.0f}s")


if __name__ == "__main__":
    main()
