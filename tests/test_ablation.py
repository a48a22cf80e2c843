"""`splip-engine ablate` / run_ablation: every row of SPEC §6 trained with its switches, the table
written as Markdown and JSON with mean ± spread over the seeds, and the CLI's help."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from splip_engine import SpLIPConfig
from splip_engine.ablation import ROW_NAMES, ROWS, row_config, run_ablation, select_regimes, select_rows
from splip_engine.cli import main
from splip_engine.errors import SpLIPError
from splip_engine.train import TrainConfig


@pytest.fixture(scope="module")
def tiny_clip_file(tmp_path_factory):
    """A tiny CLIP weights file, so checkpoints hold only the trainable tensors (small and fast)."""
    from splip_engine.model.backbone import create_clip

    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.manual_seed(0)
    torch.save(create_clip("tiny", "").state_dict(), path)
    return path


def _train_cfg(mini) -> TrainConfig:
    return TrainConfig(sketch_root=str(mini.sketch_root), photo_root=str(mini.photo_root), split=str(mini.unseen_file),
                       epochs=1, batch_size=4, triplets_per_epoch=8, workers=0, val_fraction=0.2)


def test_rows_switch_what_their_names_say():
    base = SpLIPConfig(clip_model="tiny", pretrained="", alpha=0.2, beta=0.3, adaptive_margin=False)
    cfg = {row.name: row_config(base, row) for row in ROWS}
    assert (cfg["L_class only"].triplet_weight, cfg["L_class only"].alpha, cfg["L_class only"].beta) == (0, 0.2, 0)
    assert (cfg["L_triplet only"].alpha, cfg["L_triplet only"].beta) == (0, 0)
    assert not cfg["L_triplet + L_class"].adaptive_margin and cfg["+ adaptive margin"].adaptive_margin
    assert cfg["+ L_cjs (all losses)"].beta == 0.3 and cfg["+ L_cjs (all losses)"].adaptive_margin
    assert cfg["all prompt modules (base config)"] == base
    assert cfg["without B_t"].mapping_blocks == ("B_v", "B_vt")
    assert cfg["without B_v"].mapping_blocks == ("B_t", "B_vt")
    assert cfg["without B_vt"].mapping_blocks == ("B_v",)
    assert cfg["without any prompt module"].mapping_blocks == ()
    with pytest.raises(SpLIPError, match="unknown ablation rows \\['without B_x'\\]"):
        select_rows(["without B_x"])


def test_ablation_writes_both_tables_with_every_row(mini, tiny_clip_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # run_train records runs/latest in the working directory
    base = SpLIPConfig(clip_model="tiny", pretrained=str(tiny_clip_file), beta=0.0)
    rows = ["L_triplet only", "without B_t"]
    report = run_ablation(base, _train_cfg(mini), tmp_path / "abl", seeds=(0, 1), rows=rows, progress=False)

    table = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["name"] for r in table["rows"]] == rows and table["seeds"] == [0, 1]
    for row in table["rows"]:
        assert set(row["per_seed"]) == {"0", "1"}
        zs = [row["per_seed"][s]["zs"]["map_all"] for s in ("0", "1")]
        assert row["mean"]["zs"]["map_all"] == pytest.approx(sum(zs) / 2)
        assert row["spread"]["zs"]["map_all"] == pytest.approx(abs(zs[0] - zs[1]) / 2 ** 0.5)
    paper = {r.name: r.paper for r in ROWS}
    markdown = (tmp_path / "abl" / "ablation.md").read_text()
    for name in rows:
        line = next(line for line in markdown.splitlines() if f"| {name} |" in line)
        per_seed = ", ".join(f"{100 * table['rows'][rows.index(name)]['per_seed'][s]['zs']['map_all']:.1f}"
                             for s in ("0", "1"))
        assert line.count("±") == 4 and line.rstrip(" |").endswith(f"| {per_seed} | {paper[name]:.1f}")
    assert "tiny CLIP, no prompts, untrained" in markdown and report.markdown() == markdown
    # each (row, seed) trained once, with the row's config
    saved = json.loads((tmp_path / "abl" / "runs" / "trained" / "without-b-t" / "seed1" / "checkpoint" / "config.json").read_text())
    assert saved["use_b_t"] is False and saved["seed"] == 1
    assert len(list((tmp_path / "abl" / "runs").glob("*/*/seed*/metrics.json"))) == 4

    # a re-run reuses the finished runs' metrics and rewrites the same table
    again = run_ablation(base, _train_cfg(mini), tmp_path / "abl", seeds=(0, 1), rows=rows, progress=False)
    assert again.rows == report.rows


@pytest.mark.slow
def test_cli_ablate_runs_every_row_of_the_paper(mini, tiny_clip_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [
        "ablate", "--data-root", str(mini.root), "--clip-model", "tiny", "--pretrained", str(tiny_clip_file),
        "--seeds", "0,1", "--epochs", "1", "--batch-size", "4", "--triplets-per-epoch", "8", "--workers", "0",
        "--out", str(tmp_path / "abl")])
    assert result.exit_code == 0, result.output
    table = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    markdown = (tmp_path / "abl" / "ablation.md").read_text()
    assert all(f"| {name} |" in markdown for name in ROW_NAMES) and markdown in result.output
    # "+ L_cjs (all losses)" and the base config coincide with the CLI defaults: trained once
    assert table["rows"][4]["per_seed"] == table["rows"][5]["per_seed"]
    assert (table["rows"][5]["lr_layernorm"], table["rows"][len(ROW_NAMES)]["lr_layernorm"]) == (1e-5, 0.0)
    # loss rows with the LayerNorms trained only, module rows in both regimes
    modules = [r.name for r in ROWS if r.group == "module"]
    assert [(r["name"], r["layernorm"]) for r in table["rows"]] == (
        [(n, "trained") for n in ROW_NAMES] + [(n, "frozen") for n in modules])
    assert len(list((tmp_path / "abl" / "runs").glob("*/*/seed*/metrics.json"))) == 2 * (len(ROW_NAMES) - 1 + len(modules))


def test_cli_help_has_an_example_and_bad_seeds_are_refused(mini):
    runner = CliRunner()
    result = runner.invoke(main, ["ablate", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output and "splip-engine ablate --data-root" in result.output
    bad = runner.invoke(main, ["ablate", "--data-root", str(mini.root), "--seeds", "a,b"])
    assert bad.exit_code == 2 and "comma-separated integers" in bad.output
    unknown = runner.invoke(main, ["ablate", "--data-root", str(mini.root), "--clip-model", "tiny", "--pretrained", "",
                                   "--rows", "without B_x"])
    assert unknown.exit_code == 2 and "unknown ablation rows" in unknown.output and "Traceback" not in unknown.output


def test_rows_cover_the_paper_tables():
    assert len(ROW_NAMES) == 10 and {r.group for r in ROWS} == {"loss", "module"}
    assert [r.paper for r in ROWS if r.group == "loss"] == [57.5, 71.6, 73.1, 74.5, 76.4]
    assert [r.paper for r in ROWS if r.group == "module"][1:] == [70.5, 72.8, 71.9, 62.5]
    assert dataclasses.is_dataclass(ROWS[0])


def test_frozen_regime_leaves_the_layernorms_as_loaded_and_trained_moves_them(mini, tiny_clip_file, tmp_path,
                                                                               monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.chdir(tmp_path)
    base = SpLIPConfig(clip_model="tiny", pretrained=str(tiny_clip_file), beta=0.0)
    train = dataclasses.replace(_train_cfg(mini), lr_layernorm=1e-2)
    report = run_ablation(base, train, tmp_path / "abl", seeds=(0,), rows=["without B_t"], progress=False,
                          layernorm="both")
    assert [(r["layernorm"], r["lr_layernorm"]) for r in report.rows] == [("trained", 1e-2), ("frozen", 0.0)]
    loaded = torch.load(tiny_clip_file)
    moved = {}
    for regime in ("trained", "frozen"):
        saved = load_file(tmp_path / "abl" / "runs" / regime / "without-b-t" / "seed0" / "checkpoint" /
                          "model.safetensors")
        norms = {k.removeprefix("clip."): v for k, v in saved.items() if k.startswith("clip.") and "ln" in k}
        assert norms, "the checkpoint holds the towers' LayerNorms"
        moved[regime] = max(float((v - loaded[k]).abs().max()) for k, v in norms.items())
        blocks = [v for k, v in saved.items() if not k.startswith("clip.")]
        assert blocks, "the prompt modules are trained in both regimes"
    assert moved["frozen"] == 0.0 and moved["trained"] > 1e-4
    with pytest.raises(SpLIPError, match="unknown LayerNorm regime"):
        select_regimes("thawed")
    assert select_regimes("both") == ["trained", "frozen"] and select_regimes(["frozen"]) == ["frozen"]
