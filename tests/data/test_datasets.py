"""Lazy datasets: a bad image is skipped and reported, never a crash mid-epoch (also across workers)."""
from __future__ import annotations

import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from splip_engine.data.datasets import BadImage, ImageDataset, TripletDataset, collate_skip_bad
from splip_engine.data.folder import SBIRFolder
from splip_engine.data.sampler import TripletSampler
from splip_engine.data.transforms import PreprocessSpec, eval_transform, train_transform

SPEC = PreprocessSpec(image_size=16)


@pytest.fixture
def damaged(mini, tmp_path):
    """A copy of the mini dataset whose first circle photo is truncated: (folder, bad path)."""
    root = tmp_path / "ds"
    shutil.copytree(mini.root, root)
    bad = sorted((root / "photo" / "circle").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:100])
    return SBIRFolder(root / "sketch", root / "photo"), bad


def triplet_loader(folder: SBIRFolder, num_workers: int) -> tuple[TripletDataset, DataLoader]:
    split = folder.subset(folder.classes)
    dataset = TripletDataset(split, train_transform("sketch", SPEC), train_transform("photo", SPEC))
    sampler = TripletSampler(split, seed=0, num_triplets=160)
    return dataset, DataLoader(dataset, batch_size=20, sampler=sampler, collate_fn=collate_skip_bad,
                               num_workers=num_workers)


def test_triplet_batches_have_shapes_and_labels(mini):
    folder = SBIRFolder(mini.sketch_root, mini.photo_root)
    _, loader = triplet_loader(folder, num_workers=0)
    batch = next(iter(loader))
    assert batch["size"] == 20 and batch["bad"] == []
    for key in ("sketch", "positive", "negative"):
        assert batch[key].shape == (20, 3, 16, 16) and batch[key].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and (batch["label"] != batch["negative_label"]).all()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_bad_image_is_skipped_and_reported_for_a_whole_epoch(damaged, num_workers):
    folder, bad = damaged
    dataset, loader = triplet_loader(folder, num_workers)
    sizes, reported = [], set()
    for batch in loader:
        sizes.append(batch["size"])
        reported |= {(b.path, b.message) for b in batch["bad"]}
    assert len(sizes) == 8 and sum(sizes) < 160  # every batch came, the bad triplets were dropped
    assert {path for path, _ in reported} == {str(bad)}
    assert "truncated image" in next(iter(reported))[1]
    if num_workers == 0:
        assert list(dataset.bad_files) == [str(bad)]


def test_image_dataset_items_and_bad_ones(damaged):
    folder, bad = damaged
    items = folder.subset(["circle"]).items("photo")
    dataset = ImageDataset(items, eval_transform("photo", SPEC))
    first, second = dataset[0], dataset[1]
    assert isinstance(first, BadImage) and first.path == str(bad)
    assert dataset[0] is first  # remembered, not decoded again
    assert second["image"].shape == (3, 16, 16) and second["label"] == 0 and second["index"] == 1
    batch = collate_skip_bad([first, second])
    assert batch["size"] == 1 and batch["bad"] == [first] and batch["index"].tolist() == [1]


def test_collate_of_only_bad_items():
    bad = BadImage("x.png", "x.png: truncated image data")
    assert collate_skip_bad([bad, bad]) == {"bad": [bad, bad], "size": 0}
