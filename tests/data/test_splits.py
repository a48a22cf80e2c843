"""Standard ZS-SBIR splits ship with the package; class list files are read robustly."""
from __future__ import annotations

from importlib import resources

import pytest

from splip_engine.data.splits import SPLITS, load_unseen_classes
from splip_engine.errors import SpLIPError


@pytest.mark.parametrize("name, count", [("sketchy25", 25), ("sketchy21", 21), ("tuberlin30", 30),
                                         ("quickdraw30", 30)])
def test_standard_split_sizes(name, count):
    classes = load_unseen_classes(name)
    assert len(classes) == count == len(set(classes))
    assert all(c == c.strip() and c for c in classes)


def test_sketchy25_is_the_complement_of_the_shipped_seen_list():
    seen = resources.files("splip_engine.data").joinpath("splits", "seen_sketchy.txt").read_text().split("\n")
    seen = {line.strip() for line in seen if line.strip()}
    unseen = set(load_unseen_classes("sketchy25"))
    assert len(seen) == 100 and not seen & unseen


def test_tuberlin_names_keep_their_inner_spaces():
    assert any(" " in name for name in load_unseen_classes("tuberlin30"))


def test_split_readme_carries_the_mit_attribution():
    readme = resources.files("splip_engine.data").joinpath("splits", "README.md").read_text()
    assert "MIT" in readme and "ZSE-SBIR" in readme


def test_class_list_file_by_path(tmp_path, caplog):
    path = tmp_path / "mine.txt"
    path.write_text("alarm clock\n\n  cat \r\ndog\ncat\n")
    assert load_unseen_classes(path) == ["alarm clock", "cat", "dog"]
    assert load_unseen_classes(str(path)) == ["alarm clock", "cat", "dog"]
    assert "more than once" in caplog.text


def test_unknown_split_name_lists_the_valid_ones():
    with pytest.raises(SpLIPError, match=r"unknown split 'sketchy99': not one of \['quickdraw30', 'sketchy21', "
                                         r"'sketchy25', 'tuberlin30'\]"):
        load_unseen_classes("sketchy99")
    assert sorted(SPLITS) == ["quickdraw30", "sketchy21", "sketchy25", "tuberlin30"]


def test_empty_class_list_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n \n")
    with pytest.raises(SpLIPError, match="class list .*empty.txt is empty"):
        load_unseen_classes(path)


def test_directory_is_not_a_class_list(tmp_path):
    with pytest.raises(SpLIPError, match="unknown split"):
        load_unseen_classes(tmp_path)
