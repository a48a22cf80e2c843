"""Newcomer mistakes are one `error:` line naming the bad value and the fix, exit code 2, never a
traceback: an image as --pretrained, a missing --data-root, a text file or an empty folder as
embed's --input."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from data.imagefactory import noise_image
from splip_engine.cli import main

README = Path(__file__).parents[1] / "README.md"


def _one_error_line(argv: list[str]) -> str:
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.output, result.exc_info)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1, lines
    return lines[-1]


@pytest.mark.parametrize("content, what", [("png", "a PNG image"), ("text", "not a PyTorch or safetensors file"),
                                           ("empty", "empty")])
def test_train_pretrained_that_is_not_a_checkpoint(content, what, tmp_path, mini):
    weights = tmp_path / "some.png"
    if content == "png":
        noise_image(16, 16).save(weights)
    else:
        weights.write_text("" if content == "empty" else "hello\n")
    line = _one_error_line(["train", "--data-root", str(mini), "--clip-model", "tiny", "--pretrained", str(weights),
                            "--epochs", "1", "--out", str(tmp_path / "run")])
    assert line == (f"error: --pretrained {weights} is not a weights file ({what}); pass an open_clip checkpoint "
                    "(.pt / .bin / .safetensors), a tag such as 'openai', or '' for random init")
    assert not (tmp_path / "run").exists()


def test_pretrained_accepts_torch_and_safetensors_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    from splip_engine.cli.options import check_pretrained

    torch.save({"w": torch.zeros(2)}, tmp_path / "a.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "b.pt", _use_new_zipfile_serialization=False)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "c.safetensors"))
    for name in ("a.pt", "b.pt", "c.safetensors", "openai", ""):
        value = str(tmp_path / name) if "." in name else name
        assert check_pretrained(None, None, value) == value


@pytest.mark.parametrize("command", ["train", "eval"])
def test_missing_data_root_names_it_and_the_fix(command, tmp_path):
    missing = tmp_path / "missing"
    line = _one_error_line([command, "--data-root", str(missing)])
    assert line == (f"error: --data-root {missing} does not exist; make a dataset there with "
                    f"`splip-engine data mini --out {missing}` or pass the folder that holds sketch/ and photo/")
    (tmp_path / "other").mkdir()
    line = _one_error_line([command, "--data-root", str(tmp_path / "other")])
    assert re.fullmatch(r"error: --data-root \S+other holds no sketch/ and no photo/ folder; .*--photo-root", line)


def test_embed_of_a_text_file_that_is_not_a_list(tiny_engine_dir, tmp_path):
    line = _one_error_line(["embed", "--engine", str(tiny_engine_dir), "--input", str(README), "--out",
                            str(tmp_path / "store"), "--device", "cpu", "--workers", "0"])
    assert re.fullmatch(rf"error: input {re.escape(str(README))} is not a list of image paths: \d+ of its first \d+ "
                        r"lines are not \(line 1: .*\); a list holds one image file path per line; pass a folder .*",
                        line), line


def test_embed_of_an_empty_folder_is_an_error(tiny_engine_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    line = _one_error_line(["embed", "--engine", str(tiny_engine_dir), "--input", str(tmp_path / "empty"), "--out",
                            str(tmp_path / "store"), "--device", "cpu", "--workers", "0"])
    assert line == (f"error: input {tmp_path / 'empty'} holds no images (folder): nothing to embed; check --input, or "
                    "pass a folder of images, a .txt list, a .parquet, tar shards or .ndjson drawings")


def test_a_list_with_some_bad_lines_is_still_a_list(tmp_path):
    from splip_engine.runtime.inputs import open_input

    noise_image(16, 16).save(tmp_path / "a.png")
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'a.png'}\n{tmp_path / 'b.jpg'}\nnot a path\n")
    assert open_input(tmp_path / "list.txt").kind == "list"  # the missing / odd lines become listed errors
