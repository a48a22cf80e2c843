"""A tiny SpLIP checkpoint (the torch-backend engine) and a small gallery with planted bad files."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from splip_engine import SpLIPConfig, build_model, save_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "ckpt"
    save_checkpoint(build_model(SpLIPConfig(clip_model="tiny", pretrained="")), path)
    return path


def make_gallery(root, n_good: int, seed: int = 0) -> list[str]:
    """n_good random JPEG/PNG photos in class subfolders, plus bad files; returns the bad ids."""
    rng = np.random.default_rng(seed)
    for i in range(n_good):
        folder = root / f"class{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (rng.integers(20, 60), rng.integers(20, 60), 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img {i:03d}.{'jpg' if i % 2 else 'png'}")
    (root / "class0" / "empty.jpg").write_bytes(b"")
    (root / "class1" / "notes.txt").write_text("not an image")
    (root / "class2" / "truncated.png").write_bytes((root / "class2" / "img 002.png").read_bytes()[:60])
    return ["class0/empty.jpg", "class1/notes.txt", "class2/truncated.png"]


def random_images(directory, count: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """`count` random uint8 RGB arrays and the PNG files they were saved to."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (int(rng.integers(24, 48)), int(rng.integers(24, 48)), 3), dtype=np.uint8)
              for _ in range(count)]
    paths = []
    for i, array in enumerate(arrays):
        Image.fromarray(array).save(directory / f"{i}.png")
        paths.append(str(directory / f"{i}.png"))
    return arrays, paths
