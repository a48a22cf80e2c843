"""The synthetic mini dataset: layout, naming, determinism, errors, CLI, and distinct classes."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from splip_engine.cli import main
from splip_engine.data.folder import SBIRFolder
from splip_engine.data.mini import SHAPES, make_mini_dataset
from splip_engine.data.pairs import fg_pair_key
from splip_engine.data.sampler import TripletSampler
from splip_engine.errors import SpLIPError


def digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_names_and_formats(mini):
    root = mini.root
    assert sorted(p.name for p in root.iterdir()) == ["README.txt", "photo", "sketch", "unseen.txt"]
    assert mini.classes == SHAPES[:6] and len(set(SHAPES)) == len(SHAPES) >= 12
    for name in mini.classes:
        sketches = sorted((root / "sketch" / name).iterdir())
        photos = sorted((root / "photo" / name).iterdir())
        assert [p.name for p in sketches] == [f"{name}_{i:04d}-1.png" for i in range(6)]
        assert [fg_pair_key(p) for p in photos] == [fg_pair_key(p) for p in sketches]
        with Image.open(sketches[0]) as sketch, Image.open(photos[0]) as photo:
            assert (sketch.format, sketch.size) == ("PNG", (32, 32))
            assert (photo.format, photo.size, photo.mode) == ("JPEG", (32, 32), "RGB")
            assert np.asarray(sketch)[0, 0] == 255  # white paper around the drawing
    assert (root / "unseen.txt").read_text().split() == list(mini.unseen)
    assert len(mini.unseen) == 2 and set(mini.unseen) <= set(mini.classes)  # round(6 / 4)
    assert "splip-engine data mini --classes 6 --per-class 6 --seed 0 --size 32" in (root / "README.txt").read_text()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = make_mini_dataset(tmp_path / "a", classes=3, per_class=3, seed=5, size=24)
    again = make_mini_dataset(tmp_path / "b", classes=3, per_class=3, seed=5, size=24)
    other = make_mini_dataset(tmp_path / "c", classes=3, per_class=3, seed=6, size=24)
    assert digest(first.root) == digest(again.root)
    a, c = digest(first.root), digest(other.root)
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.endswith((".png", ".jpg")))


def test_a_class_looks_the_same_whatever_the_class_count(tmp_path):
    few = make_mini_dataset(tmp_path / "few", classes=2, per_class=2)
    many = make_mini_dataset(tmp_path / "many", classes=4, per_class=2)
    assert digest(few.root / "photo") == {k: v for k, v in digest(many.root / "photo").items()
                                           if k.split("/")[0] in few.classes}


def test_works_with_folder_splits_and_fine_grained_sampler(mini):
    folder = SBIRFolder(mini.sketch_root, mini.photo_root)
    seen, unseen = folder.split_classes(mini.unseen_file)
    assert unseen == sorted(mini.unseen) and len(seen) == 4
    split = folder.subset(seen)
    sketches, photos = split.items("sketch"), split.items("photo")
    for anchor, positive, _ in TripletSampler(split, fine_grained=True, num_triplets=50):
        assert fg_pair_key(sketches[anchor][0]) == fg_pair_key(photos[positive][0])


def test_sketch_classes_are_distinct_silhouettes(tmp_path):
    # leave-one-out 1-NN on 16 px sketches: a proxy for "a tiny ViT can learn these classes"
    made = make_mini_dataset(tmp_path / "d", classes=12, per_class=8, size=32)
    features, labels = [], []
    for label, name in enumerate(made.classes):
        for path in sorted((made.sketch_root / name).iterdir()):
            with Image.open(path) as image:
                features.append(np.asarray(image.resize((16, 16), Image.BILINEAR), np.float32).ravel())
            labels.append(label)
    x = np.stack(features)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    similarity = x @ x.T
    np.fill_diagonal(similarity, -np.inf)
    accuracy = float((np.asarray(labels)[similarity.argmax(1)] == labels).mean())
    assert accuracy > 0.8  # chance is 1/12; measured about 0.95 at 16 classes x 24


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": 1}, "--classes 1: must be between 2 and"),
    ({"classes": len(SHAPES) + 1}, f"--classes {len(SHAPES) + 1}: must be between 2 and {len(SHAPES)}"),
    ({"per_class": 1}, "--per-class 1: must be >= 2"),
    ({"size": 8}, "--size 8: must be >= 16"),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(SpLIPError, match=message):
        make_mini_dataset(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_refuses_a_non_empty_output_and_leaves_it_alone(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(SpLIPError, match="already exists and is not an empty folder"):
        make_mini_dataset(tmp_path / "out", classes=2, per_class=2)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]


def test_fills_an_existing_empty_folder_and_leaves_no_staging(tmp_path):
    (tmp_path / "out").mkdir()
    make_mini_dataset(tmp_path / "out", classes=2, per_class=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (tmp_path / "out" / "unseen.txt").is_file()


def test_cli_writes_the_dataset_and_reports_errors(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["data", "mini", "--out", str(tmp_path / "m"), "--classes", "4", "--per-class", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 classes x 2 sketch/photo pairs" in result.output
    assert len(list((tmp_path / "m" / "sketch").iterdir())) == 4
    again = runner.invoke(main, ["data", "mini", "--out", str(tmp_path / "m")])
    assert again.exit_code == 2 and "error:" in again.output and "already exists" in again.output


def test_cli_help_has_an_example():
    result = CliRunner().invoke(main, ["data", "mini", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "--per-class" in result.output


def test_clipart_corpus_layout_styles_and_no_sbir_image(tmp_path):
    from splip_engine.data.mini import make_clipart_corpus

    sbir = make_mini_dataset(tmp_path / "sbir", classes=3, per_class=4, size=32)
    corpus = make_clipart_corpus(tmp_path / "corpus", classes=3, per_class=4, size=32)
    again = make_clipart_corpus(tmp_path / "again", classes=3, per_class=4, size=32)
    assert digest(corpus.root) == digest(again.root)  # deterministic
    assert set(corpus.roots) == {"photo", "clip art", "line drawing"}
    assert sorted(p.name for p in corpus.root.iterdir()) == ["clipart", "lineart", "photo"]
    sbir_bytes = set(digest(sbir.root).values())
    for kind, root in corpus.roots.items():
        assert sorted(p.name for p in root.iterdir()) == sorted(corpus.classes)
        assert not sbir_bytes & set(digest(root).values()), f"an SBIR image is in the corpus' {kind}"
    for name in corpus.classes:
        with Image.open(sorted((corpus.roots["clip art"] / name).iterdir())[0]) as clipart:
            pixels = np.asarray(clipart.convert("RGB"), np.int16)
        assert (pixels[0, 0] == 255).all()  # white around the drawing
        coloured = np.abs(pixels - 255).sum(-1) > 60
        assert coloured.mean() > 0.08  # a filled silhouette, not a thin outline


def test_free_hand_sketches_are_not_clean_outlines():
    """A free-hand sketch wobbles off, breaks and over-traces the clean outline of the same pose
    (the line drawing the stand-in CLIP saw): it shares much less ink with it than two clean line
    drawings of that pose in other widths do with each other."""
    from splip_engine.data.mini import _draw_freehand, _draw_lineart, _Pose, _shape

    def ink(image) -> np.ndarray:
        return np.asarray(image.convert("L")) < 128  # (64, 64) bool

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / (a | b).sum())

    sketch_vs_clean, clean_vs_clean = [], []
    for i in range(8):
        pose = _Pose.draw(64, np.random.default_rng([7, i]))
        clean = ink(_draw_lineart(_shape("square"), pose, np.random.default_rng([9, i])))
        other_clean = ink(_draw_lineart(_shape("square"), pose, np.random.default_rng([10, i])))
        sketch = ink(_draw_freehand(_shape("square"), pose, np.random.default_rng([8, i])))
        sketch_vs_clean.append(iou(sketch, clean))
        clean_vs_clean.append(iou(other_clean, clean))
    # measured: 0.42 vs 0.79 on average; near the outline (> 0), never on it
    assert np.mean(sketch_vs_clean) < np.mean(clean_vs_clean) - 0.2 and min(sketch_vs_clean) > 0.05
