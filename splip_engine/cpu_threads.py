"""How many threads torch's intra-op pool gets for CPU work on a model, and a scope that sets them.

Measured on the 2-core AMD EPYC here (benchmarks/busy_machine.md): a tiny model's ops are too
small to amortise an OpenMP barrier, so 2 threads lose to 1 even on a quiet machine (150 steps of
the stand-in's pre-training: 9.4 s vs 5.7 s), and when another job shares the cores every parallel
region waits for the descheduled thread (34.1 s vs 9.7 s beside a 2-thread PyTorch job). Large
models (ViT-B) keep one thread per core not used by data-loading worker processes.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

SMALL_MODEL_MACS = 50_000_000
"""Vision-tower MACs per image below which CPU work runs on one intra-op thread (tiny: ~2M;
ViT-B/32: 4.4G)."""


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def vision_macs(clip_model: str) -> int:
    """Approximate MACs per image of open_clip ViT `clip_model`'s image transformer, from its config
    (no model is built): layers x tokens x 12 x width^2."""
    import open_clip

    from splip_engine.model.backbone import register_presets

    register_presets()
    vision = (open_clip.get_model_config(clip_model.replace("/", "-")) or {}).get("vision_cfg", {})
    image_size, patch_size = vision.get("image_size", 224), vision.get("patch_size", 16)
    image_size = image_size[0] if isinstance(image_size, (tuple, list)) else image_size
    tokens = (image_size // patch_size) ** 2 + 1
    return vision.get("layers", 12) * tokens * 12 * vision.get("width", 768) ** 2


def intra_op_threads(clip_model: str, workers: int = 0) -> int:
    """Intra-op threads for CPU work (training, evaluation) on `clip_model` beside `workers`
    DataLoader worker processes: OMP_NUM_THREADS when the user set it; 1 for a small model; else
    the cores the workers leave."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    if vision_macs(clip_model) < SMALL_MODEL_MACS:
        return 1
    return max(1, available_cores() - workers)


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with `threads` intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
