"""runs/latest: train records its last checkpoint there; export finds it, or says how to get one."""
from __future__ import annotations

import pytest

from splip_engine.errors import SpLIPError
from splip_engine.export import find_latest_checkpoint, record_latest_checkpoint
from splip_engine.export.latest import LATEST_FILE


def test_recorded_checkpoint_is_found_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "exp1" / "checkpoint").mkdir(parents=True)
    record_latest_checkpoint(tmp_path / "runs" / "exp1" / "checkpoint")
    assert (tmp_path / LATEST_FILE).read_text().strip() == "runs/exp1/checkpoint"
    assert find_latest_checkpoint() == tmp_path.joinpath("runs/exp1/checkpoint").relative_to(tmp_path)


def test_no_record_says_how_to_get_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpLIPError, match=r"^no checkpoint found: train one with `splip-engine train \.\.\.` or pass "
                                         r"--checkpoint DIR \(or --clip-model tiny --pretrained '' for an untrained"):
        find_latest_checkpoint()


def test_stale_record_names_the_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / LATEST_FILE).write_text("runs/deleted\n")
    with pytest.raises(SpLIPError, match=r"names checkpoint 'runs/deleted', which does not exist"):
        find_latest_checkpoint()
