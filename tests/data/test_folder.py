"""SBIRFolder: deterministic scanning, clear errors, class splits and held-out validation."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from splip_engine.data.folder import SBIRFolder
from splip_engine.data.pairs import fg_pair_key
from splip_engine.errors import SpLIPError


def make_tree(root: Path, layout: dict[str, dict[str, list[str]]]) -> tuple[Path, Path]:
    """Create root/sketch/<class>/<files> and root/photo/<class>/<files> (contents irrelevant here)."""
    for kind in ("sketch", "photo"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for name, files in layout.get(kind, {}).items():
            (root / kind / name).mkdir()
            for file in files:
                (root / kind / name / file).write_bytes(b"x")
    return root / "sketch", root / "photo"


def pairs(prefix: str, n: int) -> dict[str, list[str]]:
    return {"sketch": [f"{prefix}_{i}-1.png" for i in range(n)], "photo": [f"{prefix}_{i}.jpg" for i in range(n)]}


def layout_of(**classes: int) -> dict[str, dict[str, list[str]]]:
    return {kind: {name: pairs(name, n)[kind] for name, n in classes.items()} for kind in ("sketch", "photo")}


def test_scan_is_sorted_and_keeps_only_images(tmp_path):
    layout = layout_of(zebra=3, ant=2)
    layout["sketch"]["ant"] += ["notes.txt", ".hidden.png", "B-1.PNG"]
    sketch_root, photo_root = make_tree(tmp_path, layout)
    (sketch_root / "ant" / "nested").mkdir()
    (sketch_root / ".cache").mkdir()
    folder = SBIRFolder(sketch_root, photo_root)
    assert folder.classes == ("ant", "zebra")
    assert [p.name for p in folder.sketches["ant"]] == ["B-1.PNG", "ant_0-1.png", "ant_1-1.png"]
    assert [p.name for p in folder.photos["zebra"]] == ["zebra_0.jpg", "zebra_1.jpg", "zebra_2.jpg"]
    assert folder.skipped == {}


def test_missing_root(tmp_path):
    with pytest.raises(SpLIPError, match="sketch root .*nowhere does not exist"):
        SBIRFolder(tmp_path / "nowhere", tmp_path)


def test_root_that_is_a_file(tmp_path):
    sketch_root, _ = make_tree(tmp_path, layout_of(a=1))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpLIPError, match="photo root .*file is not a directory"):
        SBIRFolder(sketch_root, tmp_path / "file")


def test_root_without_class_folders(tmp_path):
    sketch_root, _ = make_tree(tmp_path, layout_of(a=1))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.jpg").write_bytes(b"x")
    with pytest.raises(SpLIPError, match=r"photo root .*flat has no class folders; expected .*<class>/<image files>"):
        SBIRFolder(sketch_root, tmp_path / "flat")


def test_unmatched_and_empty_classes_are_skipped_and_listed(tmp_path, caplog):
    layout = layout_of(cat=2, dog=2)
    layout["sketch"]["only_sketches"] = ["a-1.png"]
    layout["photo"]["only_photos"] = ["a.jpg"]
    layout["sketch"]["empty"] = ["readme.txt"]
    layout["photo"]["empty"] = ["a.jpg"]
    with caplog.at_level(logging.WARNING):
        folder = SBIRFolder(*make_tree(tmp_path, layout))
    assert folder.classes == ("cat", "dog")
    assert folder.skipped == {
        "empty": "its sketch folder has no images",
        "only_photos": "a photo folder but no sketch folder (closest unpaired folders: ['only_sketches'])",
        "only_sketches": "a sketch folder but no photo folder (closest unpaired folders: ['only_photos'])",
    }
    assert "skipping 3 class folders" in caplog.text and "only_sketches" in caplog.text


def test_no_common_class(tmp_path):
    layout = {"sketch": {"cat": ["a-1.png"]}, "photo": {"dog": ["a.jpg"]}}
    with pytest.raises(SpLIPError, match=r"no class has images under both .*sketch classes \['cat'\], photo "
                                         r"classes \['dog'\]; class folders must have the same names"):
        SBIRFolder(*make_tree(tmp_path, layout))


def test_photo_folders_spelt_otherwise_join_their_sketch_class(tmp_path):
    layout = {"sketch": {"alarm clock": ["a-1.png"], "Cat": ["c-1.png"], "teddy-bear": ["t-1.png"]},
              "photo": {"alarm_clock": ["a.jpg"], "cat": ["c.jpg"], "teddybear": ["t.jpg"]}}
    folder = SBIRFolder(*make_tree(tmp_path, layout))
    assert folder.classes == ("Cat", "alarm clock", "teddy-bear")  # the sketch folders' spelling
    assert {n: [p.name for p in files] for n, files in folder.photos.items()} == {
        "Cat": ["c.jpg"], "alarm clock": ["a.jpg"], "teddy-bear": ["t.jpg"]}


def test_split_classes_by_names_file_and_standard_name(tmp_path):
    folder = SBIRFolder(*make_tree(tmp_path, layout_of(a=1, b=1, c=1, d=1)))
    assert folder.split_classes(["d", "b"]) == (["a", "c"], ["b", "d"])
    split_file = tmp_path / "unseen.txt"
    split_file.write_text("c\n")
    assert folder.split_classes(split_file) == (["a", "b", "d"], ["c"])
    assert folder.split_classes(str(split_file)) == (["a", "b", "d"], ["c"])
    with pytest.raises(SpLIPError, match="unknown split 'sketchy99'"):
        folder.split_classes("sketchy99")
    with pytest.raises(SpLIPError, match="25 unseen classes match no usable class .*'swan' \\(closest classes: "
                                         "none\\).* and 15 more; does the split belong to this dataset"):
        folder.split_classes("sketchy25")


def test_split_classes_says_why_an_unseen_class_is_unusable(tmp_path):
    layout = layout_of(a=1, b=1)
    layout["sketch"]["c"] = ["x-1.png"]
    folder = SBIRFolder(*make_tree(tmp_path, layout))
    with pytest.raises(SpLIPError, match=r"1 unseen classes .*'c' \(a sketch folder but no photo folder\)"):
        folder.split_classes(["c"])


def test_split_with_every_class_unseen(tmp_path):
    folder = SBIRFolder(*make_tree(tmp_path, layout_of(a=1, b=1)))
    with pytest.raises(SpLIPError, match="every class is unseen"):
        folder.split_classes(["a", "b"])


def test_subset_labels_follow_sorted_class_names(tmp_path):
    folder = SBIRFolder(*make_tree(tmp_path, layout_of(a=2, b=1, c=1)))
    split = folder.subset(["c", "a"])
    assert split.classes == ("a", "c")
    assert [(p.name, label) for p, label in split.items("photo")] == [("a_0.jpg", 0), ("a_1.jpg", 0), ("c_0.jpg", 1)]
    with pytest.raises(SpLIPError, match="unknown modality 'video'"):
        split.items("video")
    with pytest.raises(SpLIPError, match="no classes requested"):
        folder.subset([])


def test_held_out_keeps_pairs_together_and_is_seeded(tmp_path):
    folder = SBIRFolder(*make_tree(tmp_path, layout_of(a=10, b=20, c=1)))
    train, val = folder.held_out(["a", "b", "c"], fraction=0.2, seed=1)
    assert train.classes == val.classes == ("a", "b", "c")
    for name, n in (("a", 10), ("b", 20)):
        assert len(val.photos[name]) == round(0.2 * n)
        assert set(train.photos[name]).isdisjoint(val.photos[name])
        assert set(train.photos[name]) | set(val.photos[name]) == set(folder.photos[name])
        assert {fg_pair_key(p) for p in val.sketches[name]} == {fg_pair_key(p) for p in val.photos[name]}
        assert set(train.sketches[name]) | set(val.sketches[name]) == set(folder.sketches[name])
    assert val.photos["c"] == () and train.photos["c"] == folder.photos["c"]  # a single image stays in train
    assert folder.held_out(["a", "b", "c"], 0.2, seed=1) == (train, val)
    assert folder.held_out(["a", "b", "c"], 0.2, seed=2)[1] != val


def test_held_out_unpaired_sketches_by_the_same_fraction(tmp_path):
    layout = {"sketch": {"a": [f"s{i}.png" for i in range(10)]}, "photo": {"a": [f"p{i}.jpg" for i in range(5)]}}
    folder = SBIRFolder(*make_tree(tmp_path, layout))
    train, val = folder.held_out(["a"], fraction=0.4, seed=0)
    assert (len(train.sketches["a"]), len(val.sketches["a"])) == (6, 4)
    assert (len(train.photos["a"]), len(val.photos["a"])) == (3, 2)


def test_held_out_fraction_zero_and_out_of_range(tmp_path):
    folder = SBIRFolder(*make_tree(tmp_path, layout_of(a=3)))
    train, val = folder.held_out(["a"], fraction=0.0)
    assert train.photos["a"] == folder.photos["a"] and val.photos["a"] == ()
    with pytest.raises(SpLIPError, match=r"held-out fraction 1.0 must be in \[0, 1\)"):
        folder.held_out(["a"], fraction=1.0)
