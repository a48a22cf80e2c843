"""Miniature replicas of each dataset as the ZS-SBIR code bases distribute it (the folder names of
SAKE / ZSE-SBIR's file lists and of Doodle2Search's download script, a few tiny files per class,
the standard split names): `--dataset X --root DIR` finds the right classes (spelled as the split
files spell them), counts (photo roots merged per class, duplicate stems once) and FG pairs, and an
unmatched split name is one error naming the closest folders."""
from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest

from splip_engine.data.classnames import letters_key, match_name
from splip_engine.data.layouts import LAYOUTS, DataSource
from splip_engine.data.pairs import fg_pair_key
from splip_engine.data.splits import load_dataset_classes, load_unseen_classes
from splip_engine.errors import SpLIPError

SKETCHY_SEEN = ["alarm_clock", "car_(sedan)", "hot-air_balloon", "jack-o-lantern", "zebra"]
TUBERLIN_SEEN = ["alarm clock", "bear (animal)", "giraffe", "mouse (animal)", "teddy-bear", "wrist-watch"]
QUICKDRAW_SEEN = ["alarm_clock", "cruise ship", "hot-air_balloon", "teapot"]


def _files(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")  # the scan reads names only


def sketchy_replica(root: Path, classes: list[str], *, ready: bool = False, doodle2search: bool = False,
                    extended: bool = True) -> None:
    """Sketchy-Ext: per class 2 photos with 2 sketches each in the original tree, 3 extended photos
    of which one repeats an original's stem; a `tx_000000000010` augmentation tree to be ignored.
    `ready`: SAKE's `_ready` folders; `doodle2search`: its `sketch/`, `photo/`, `extended_photo/`
    with `-` renamed to `_` in class names."""
    tx = "tx_000000000000" + ("_ready" if ready else "")
    base = root if doodle2search else root / "256x256"
    extended_dir = root / ("extended_photo" if doodle2search else "EXTEND_image_sketchy" + ("_ready" if ready else ""))
    for name in classes:
        folder = name.replace("-", "_") if doodle2search else name
        stems = [f"n0{zlib.crc32(name.encode()) % 10**7:07d}_{i}" for i in (11, 22)]
        _files(base / "sketch" / tx / folder, [f"{s}-{k}.png" for s in stems for k in (1, 2)])
        _files(base / "sketch" / "tx_000000000010" / folder, [f"{stems[0]}-1.png"])
        _files(base / "photo" / tx / folder, [f"{s}.jpg" for s in stems])
        if extended:
            _files(extended_dir / folder, ["ext_1.jpg", "ext_2.jpg", f"{stems[1]}.jpg"])


def tuberlin_replica(root: Path, classes: list[str], *, ready: bool = False, doodle2search: bool = False) -> None:
    """TU-Berlin-Ext: `png/<class>` spelled as the split files (`alarm clock`), `ImageResized/<class>`
    spelled without spaces or punctuation and with the distributed misspellings (`griaffe`,
    `mouse`, `tromobone`); `ready`: both spelled as the split files; `doodle2search`: `sketches/`
    and `images/` with `_` for spaces."""
    misspelt = {"giraffe": "griaffe", "mouse (animal)": "mouse", "trombone": "tromobone", "space shuttle": "spacesshuttle"}
    for i, name in enumerate(classes):
        if doodle2search:
            sketches, photos = root / "sketches" / name.replace(" ", "_"), root / "images" / name.replace(" ", "_")
        elif ready:
            sketches, photos = root / "png_ready" / name, root / "ImageResized_ready" / name
        else:
            sketches, photos = root / "png" / name, root / "ImageResized" / misspelt.get(name, letters_key(name))
        _files(sketches, [f"{i * 80 + k}.png" for k in (1, 2, 3)])
        _files(photos, [f"n0{i:07d}_{k}.JPEG" for k in (1, 2)])


def quickdraw_replica(root: Path, classes: list[str], sketch_dir: str = "sketch") -> None:
    """QuickDraw-Ext: `sketch/<class>` (ZSE-SBIR's lists say `sketches/`) PNGs named by key_id,
    `images/<class>` photos; folders spelled with `_` for every space."""
    for i, name in enumerate(classes):
        _files(root / sketch_dir / name.replace(" ", "_"), [f"{5147947173937152 + i * 10 + k}.png" for k in (1, 2)])
        _files(root / "images" / name.replace(" ", "_"), [f"image_{i:05d}.jpg"])


def _open(dataset: str, root: Path, split: str = "") -> tuple:
    source = DataSource(dataset=dataset, root=str(root), split=split or LAYOUTS[dataset].default_split)
    folder = source.open_folder()
    return folder, folder.split_classes(source.split)


@pytest.mark.parametrize("variant", ["as_distributed", "ready", "doodle2search"])
def test_sketchy_ext_replica(tmp_path, variant):
    unseen = load_unseen_classes("sketchy25")
    sketchy_replica(tmp_path, unseen + SKETCHY_SEEN, ready=variant == "ready", doodle2search=variant == "doodle2search")
    folder, (seen, unseen_found) = _open("sketchy", tmp_path)
    assert folder.classes == tuple(sorted(unseen + SKETCHY_SEEN))  # spelled as the split files, whatever the folders
    assert (seen, unseen_found) == (sorted(SKETCHY_SEEN), sorted(unseen))
    for name in folder.classes:
        assert len(folder.sketches[name]) == 4  # tx_000000000010 is not read
        photos = folder.photos[name]
        assert len(photos) == 4  # 2 originals + 3 extended, the extended copy of an original counted once
        assert len({p.stem for p in photos}) == 4
        originals = {fg_pair_key(p): p for p in photos if "photo" in p.parts}
        assert len(originals) == 2 and all("tx_000000000000" in p.parent.parent.name for p in originals.values())
        assert {fg_pair_key(s) for s in folder.sketches[name]} == set(originals)  # every sketch pairs with an original
    assert folder.photo_duplicates == len(folder.classes)


def test_sketchy_without_extended_photos_uses_the_originals(tmp_path, caplog):
    sketchy_replica(tmp_path, load_unseen_classes("sketchy21") + SKETCHY_SEEN, extended=False)
    with caplog.at_level(logging.WARNING):
        folder, (seen, unseen) = _open("sketchy", tmp_path, "sketchy21")
    assert "no extended photo under" in caplog.text and "EXTEND_image_sketchy_ready" in caplog.text
    assert len(unseen) == 21 and all(len(folder.photos[n]) == 2 for n in folder.classes)


@pytest.mark.parametrize("variant", ["as_distributed", "ready", "doodle2search"])
def test_tuberlin_ext_replica(tmp_path, variant):
    unseen = load_unseen_classes("tuberlin30")
    tuberlin_replica(tmp_path, unseen + TUBERLIN_SEEN, ready=variant == "ready", doodle2search=variant == "doodle2search")
    folder, (seen, unseen_found) = _open("tuberlin", tmp_path)
    assert folder.skipped == {}  # every misspelt / unspaced photo folder found its class
    assert folder.classes == tuple(sorted(unseen + TUBERLIN_SEEN))
    assert (seen, unseen_found) == (sorted(TUBERLIN_SEEN), sorted(unseen))
    assert all(len(folder.sketches[n]) == 3 and len(folder.photos[n]) == 2 for n in folder.classes)
    assert [p.name for p in folder.photos["trombone"]][0].endswith(".JPEG")  # upper-case suffixes are images


def test_tuberlin_svg_sketches(tmp_path):
    classes = load_unseen_classes("tuberlin30") + TUBERLIN_SEEN
    for i, name in enumerate(classes):
        _files(tmp_path / "svg" / name, [f"{i}.svg"])
        _files(tmp_path / "ImageResized" / letters_key(name), ["a.jpg"])
    folder, _ = _open("tuberlin", tmp_path)
    assert [p.suffix for p in folder.sketches["banana"]] == [".svg"]


@pytest.mark.parametrize("sketch_dir", ["sketch", "sketches"])
def test_quickdraw_ext_replica(tmp_path, sketch_dir):
    unseen = load_unseen_classes("quickdraw30")
    quickdraw_replica(tmp_path, unseen + QUICKDRAW_SEEN, sketch_dir)
    folder, (seen, unseen_found) = _open("quickdraw", tmp_path)
    assert folder.classes == tuple(sorted(unseen + QUICKDRAW_SEEN))  # `cruise_ship` folder -> `cruise ship`
    assert (seen, unseen_found) == (sorted(QUICKDRAW_SEEN), sorted(unseen))
    assert all(len(folder.sketches[n]) == 2 and len(folder.photos[n]) == 1 for n in folder.classes)


def test_an_unmatched_split_name_is_one_error_with_the_closest_folders(tmp_path):
    quickdraw_replica(tmp_path, ["hot-air_balloon", "hot dog", "hotel", "teapot"])
    split = tmp_path / "unseen.txt"
    split.write_text("hot air baloon\nteapot\nzeppelin\n")
    with pytest.raises(SpLIPError, match=r"^2 unseen classes match no usable class under .*sketch and .*images: "
                                         r"'hot air baloon' \(closest classes: \['hot-air_balloon'\]\), "
                                         r"'zeppelin' \(closest classes: none\); does the split"):
        _open("quickdraw", tmp_path, str(split))


def test_a_missing_dataset_folder_says_where_it_looked(tmp_path):
    _files(tmp_path / "256x256" / "sketch" / "tx_000000000000" / "cup", ["a-1.png"])
    with pytest.raises(SpLIPError, match=r"--dataset sketchy --root .*: no original photo folder; looked for "
                                         r"256x256/photo/tx_000000000000_ready, 256x256/photo/tx_000000000000, .*"
                                         r"which holds \['256x256'\]"):
        _open("sketchy", tmp_path)
    with pytest.raises(SpLIPError, match="--root .*nowhere is not a directory"):
        _open("quickdraw", tmp_path / "nowhere")


@pytest.mark.parametrize("kwargs, error", [
    ({"dataset": "sketchy", "split": "sketchy25"}, "--dataset sketchy needs --root DIR"),
    ({"dataset": "coco", "root": "x", "split": "s"}, r"unknown dataset 'coco'; choose one of \['quickdraw', 'sketchy'"),
    ({"dataset": "sketchy", "root": "x", "sketch_root": "s", "split": "s"}, "either --dataset/--root or --sketch-root"),
    ({"root": "x", "split": "s"}, "--root x needs --dataset quickdraw|sketchy|tuberlin"),
    ({"sketch_root": "s", "split": "s"}, "no dataset given"),
    ({"dataset": "sketchy", "root": "x"}, "no split given"),
])
def test_incomplete_or_mixed_data_options_are_refused(kwargs, error):
    with pytest.raises(SpLIPError, match=error):
        DataSource(**kwargs)


@pytest.mark.parametrize("dataset", sorted(LAYOUTS))
def test_every_class_of_a_dataset_has_its_own_spelling_key(dataset):
    """The spelling rules never merge two classes of one dataset (each name matches only itself)."""
    names = load_dataset_classes(dataset)
    assert all(match_name(name, names) == name for name in names)
    aliases = LAYOUTS[dataset].aliases
    assert all(match_name(target, names) == target for target in aliases.values())
