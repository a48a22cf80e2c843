"""TripletSampler: class-balanced category triplets, fine-grained pairs, seeding; fg_pair_key."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from splip_engine.data.folder import ImageSplit
from splip_engine.data.pairs import fg_pair_key
from splip_engine.data.sampler import TripletSampler
from splip_engine.errors import SpLIPError


def split_of(**sizes: int) -> ImageSplit:
    """Classes with n Sketchy-named sketch/photo pairs each (paths need not exist)."""
    names = tuple(sorted(sizes))
    return ImageSplit(
        names,
        {n: tuple(Path(f"{n}/{n}_{i}-1.png") for i in range(sizes[n])) for n in names},
        {n: tuple(Path(f"{n}/{n}_{i}.jpg") for i in range(sizes[n])) for n in names},
    )


@pytest.mark.parametrize("path, key", [
    ("sketch/airplane/n02691156_10151-1.png", "n02691156_10151"),
    ("photo/airplane/n02691156_10151.jpg", "n02691156_10151"),
    ("n02691156_10151-12.png", "n02691156_10151"),
    ("circle_0003-1.png", "circle_0003"),
    ("my-photo.jpg", "my-photo"),
])
def test_fg_pair_key(path, key):
    assert fg_pair_key(path) == key


def test_category_triplets_have_the_right_classes():
    split = split_of(a=3, b=50, c=7)
    sketches, photos = split.items("sketch"), split.items("photo")
    triplets = list(TripletSampler(split, seed=0, num_triplets=3000))
    assert len(triplets) == 3000
    for anchor, positive, negative in triplets:
        assert sketches[anchor][1] == photos[positive][1] != photos[negative][1]


def test_category_triplets_are_class_balanced():
    split = split_of(a=3, b=50, c=7)
    sketches = split.items("sketch")
    counts = Counter(sketches[a][1] for a, _, _ in TripletSampler(split, seed=0, num_triplets=3000))
    assert all(900 <= counts[c] <= 1100 for c in range(3)), counts  # 1000 expected, sd ~26
    negatives = Counter(split.items("photo")[n][1] for _, _, n in TripletSampler(split, seed=0, num_triplets=3000))
    assert all(900 <= negatives[c] <= 1100 for c in range(3)), negatives


def test_epoch_length_defaults_to_the_number_of_sketches():
    assert len(TripletSampler(split_of(a=3, b=5))) == 8


def test_same_seed_and_epoch_same_triplets_else_different():
    split = split_of(a=4, b=4, c=4)
    first = list(TripletSampler(split, seed=3))
    assert first == list(TripletSampler(split, seed=3))
    assert first != list(TripletSampler(split, seed=4))
    sampler = TripletSampler(split, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_classes_without_photos_are_never_negatives():
    split = ImageSplit(("a", "b", "c"), {"a": (Path("a-1.png"),), "b": (Path("b-1.png"),), "c": (Path("c-1.png"),)},
                       {"a": (Path("a.jpg"),), "b": (), "c": (Path("c.jpg"),)})
    photos = split.items("photo")
    triplets = list(TripletSampler(split, num_triplets=200))
    assert {photos[n][1] for _, _, n in triplets} == {0, 2}
    assert {photos[p][1] for _, p, _ in triplets} == {0, 2}  # b's sketch has no positive: never an anchor


def test_fine_grained_positive_is_the_paired_photo_and_negative_same_class():
    split = split_of(a=4, b=6)
    sketches, photos = split.items("sketch"), split.items("photo")
    triplets = list(TripletSampler(split, seed=0, fine_grained=True, num_triplets=2000))
    for anchor, positive, negative in triplets:
        assert fg_pair_key(sketches[anchor][0]) == fg_pair_key(photos[positive][0])
        assert photos[negative][1] == sketches[anchor][1] and negative != positive
    # every other photo of the class is used as a negative
    negatives_of_a0 = {n for a, _, n in triplets if a == 0}
    assert negatives_of_a0 == {1, 2, 3}


def test_fine_grained_skips_unpaired_sketches_and_single_photo_classes():
    split = split_of(a=3, b=1)
    sketches = list(split.sketches["a"]) + [Path("a/unpaired-1.png")]
    split = ImageSplit(split.classes, {"a": tuple(sketches), "b": split.sketches["b"]}, split.photos)
    anchors = {a for a, _, _ in TripletSampler(split, fine_grained=True, num_triplets=500)}
    assert anchors == {0, 1, 2}


def test_needs_two_classes():
    with pytest.raises(SpLIPError, match="at least 2 classes with photos for negatives; this split has 1"):
        TripletSampler(split_of(a=3))


def test_fine_grained_needs_pairs():
    split = ImageSplit(("a",), {"a": (Path("x-1.png"),)}, {"a": (Path("y.jpg"), Path("z.jpg"))})
    with pytest.raises(SpLIPError, match="fine-grained triplets need sketches paired with photos"):
        TripletSampler(split, fine_grained=True)


def test_num_triplets_must_be_positive():
    with pytest.raises(SpLIPError, match="num_triplets=0 must be >= 1"):
        TripletSampler(split_of(a=1, b=1), num_triplets=0)


def test_triplets_are_python_ints():
    triplet = next(iter(TripletSampler(split_of(a=2, b=2))))
    assert all(type(i) is int for i in triplet) and not isinstance(triplet[0], np.integer)
