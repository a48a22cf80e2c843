"""`train`, `eval` and `ablate` read a dataset as distributed (`--dataset tuberlin --root DIR`:
misspelt photo folders, SVG sketches), and `eval`'s JSON counts the queries and gallery of every
setting, with the GZS gallery's seen photos all of them or only those the run held out."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from splip_engine.cli import main
from splip_engine.data.layouts import DataSource

from .imagefactory import encode, noise_image, strokes_svg

CLASSES = {"alarm clock": "alarmclock", "giraffe": "griaffe", "teddy-bear": "teddybear", "wrist-watch": "wristwatching"}
UNSEEN = ["giraffe", "wrist-watch"]
SKETCHES, PHOTOS = 3, 3


def _polygon(n: int, phase: float) -> list[tuple[float, float]]:
    return [(150 + 80 * math.cos(phase + 2 * math.pi * k / n), 100 + 80 * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n + 1)]


@pytest.fixture(scope="module")
def tuberlin(tmp_path_factory):
    """TU-Berlin-Ext in miniature: svg/<class>/*.svg sketches (one polygon per class, turned per
    sketch) and ImageResized/<misspelt class>/*.JPEG photos; a split file naming 2 unseen classes."""
    root = tmp_path_factory.mktemp("tuberlin")
    for i, (name, photo_folder) in enumerate(CLASSES.items()):
        (root / "svg" / name).mkdir(parents=True)
        (root / "ImageResized" / photo_folder).mkdir(parents=True)
        for k in range(SKETCHES):
            (root / "svg" / name / f"{i * 80 + k}.svg").write_bytes(strokes_svg([_polygon(i + 3, 0.3 * k)]))
        for k in range(PHOTOS):
            (root / "ImageResized" / photo_folder / f"n{i}_{k}.JPEG").write_bytes(
                encode(noise_image(40, 30, seed=10 * i + k), "JPEG"))
    (root / "unseen.txt").write_text("\n".join(UNSEEN) + "\n")
    return root


@pytest.fixture(scope="module")
def trained(tuberlin, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out.parent)  # training records runs/latest in the working directory
        result = CliRunner().invoke(main, [
            "train", "--dataset", "tuberlin", "--root", str(tuberlin), "--split", str(tuberlin / "unseen.txt"),
            "--clip-model", "tiny", "--pretrained", "", "--epochs", "1", "--batch-size", "4", "--workers", "0",
            "--triplets-per-epoch", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_train_reads_the_dataset_as_distributed(trained):
    saved = json.loads((trained / "train_config.json").read_text())
    assert saved["train"]["dataset"] == "tuberlin" and saved["seen"] == ["alarm clock", "teddy-bear"]
    assert saved["unseen"] == UNSEEN  # griaffe/ and wristwatching/ photos found their classes


def _eval(tuberlin, trained, tmp_path, *extra) -> dict:
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(main, ["eval", "--model", str(trained / "checkpoint"), "--dataset", "tuberlin",
                                       "--root", str(tuberlin), "--split", str(tuberlin / "unseen.txt"),
                                       "--modes", "zs,gzs", "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def test_eval_reports_queries_and_gallery_per_setting(tuberlin, trained, tmp_path):
    metrics = _eval(tuberlin, trained, tmp_path)
    n_unseen, n_all = len(UNSEEN), len(CLASSES)
    assert (metrics["zs"]["n_queries"], metrics["zs"]["n_gallery"]) == (n_unseen * SKETCHES, n_unseen * PHOTOS)
    assert (metrics["gzs"]["n_queries"], metrics["gzs"]["n_gallery"]) == (n_unseen * SKETCHES, n_all * PHOTOS)
    assert metrics["_meta"]["gzs_seen_photos"] == "all" and metrics["_meta"]["skipped"] == []
    assert 0 < metrics["zs"]["map_all"] <= 1


def test_gzs_with_only_the_held_out_seen_photos(tuberlin, trained, tmp_path):
    metrics = _eval(tuberlin, trained, tmp_path, "--gzs-seen-photos", "held-out")
    saved = json.loads((trained / "train_config.json").read_text())["train"]
    assert metrics["_meta"]["gzs_holdout"] == {"fraction": saved["val_fraction"], "seed": saved["seed"]}
    folder = DataSource(dataset="tuberlin", root=str(tuberlin), split=str(tuberlin / "unseen.txt")).open_folder()
    seen = json.loads((trained / "train_config.json").read_text())["seen"]
    train_part, held_out = folder.held_out(seen, saved["val_fraction"], saved["seed"])
    n_held_out = sum(len(p) for p in held_out.photos.values())
    assert 0 < n_held_out < sum(len(p) for p in folder.subset(seen).photos.values())
    assert metrics["gzs"]["n_gallery"] == len(UNSEEN) * PHOTOS + n_held_out
    trained_on = {str(p) for files in train_part.photos.values() for p in files}
    assert trained_on.isdisjoint(str(p) for files in held_out.photos.values() for p in files)
    np.testing.assert_equal(metrics["zs"], _eval(tuberlin, trained, tmp_path)["zs"])  # ZS does not change


def test_ablate_reads_the_dataset_as_distributed(tuberlin, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # training records runs/latest in the working directory
    result = CliRunner().invoke(main, [
        "ablate", "--dataset", "tuberlin", "--root", str(tuberlin), "--split", str(tuberlin / "unseen.txt"),
        "--clip-model", "tiny", "--pretrained", "", "--rows", "without B_t", "--layernorm", "trained", "--seeds", "0",
        "--epochs", "1", "--batch-size", "4", "--triplets-per-epoch", "8", "--workers", "0", "--out", str(tmp_path / "abl")])
    assert result.exit_code == 0, result.output
    run = tmp_path / "abl" / "runs" / "trained" / "without-b-t" / "seed0"
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["train"]["dataset"] == "tuberlin" and saved["unseen"] == UNSEEN
    metrics = json.loads((run / "metrics.json").read_text())
    n_unseen = len(UNSEEN)
    assert (metrics["zs"]["n_queries"], metrics["zs"]["n_gallery"]) == (n_unseen * SKETCHES, n_unseen * PHOTOS)
    assert metrics["gzs"]["n_gallery"] == len(CLASSES) * PHOTOS


@pytest.mark.parametrize("command", ["train", "eval", "ablate"])
@pytest.mark.parametrize("args, error", [
    (["--dataset", "sketchy"], "error: --dataset sketchy needs --root DIR"),
    (["--dataset", "quickdraw", "--root", "nowhere"], "error: --root nowhere is not a directory"),
    (["--root", "x", "--split", "s"], "error: --root x needs --dataset quickdraw|sketchy|tuberlin"),
])
def test_bad_data_options_are_one_line_and_exit_code_2(command, args, error, tmp_path):
    result = CliRunner().invoke(main, [command, *args, "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.stderr.strip() == result.stderr.strip().splitlines()[0]
    assert result.stderr.startswith(error), result.stderr
