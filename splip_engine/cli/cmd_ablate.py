"""`splip-engine ablate`: the paper's loss and module ablations (SPEC §6) as one table."""
from __future__ import annotations

import click

from splip_engine.cli.options import check_pretrained, data_options, device_option, resolve_data_roots, training_options


def _seeds(ctx, param, value: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in value.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise click.BadParameter("give at least one seed, e.g. 0,1,2")
    return seeds


@click.command("ablate")
@data_options
@click.option("--clip-model", default="ViT-B-32", show_default=True, help="open_clip model name, or 'tiny'.")
@click.option("--pretrained", default="openai", show_default=True, callback=check_pretrained,
              help="open_clip tag, a local weights file, or '' for random init.")
@click.option("--out", default="runs/ablation", show_default=True, type=click.Path(),
              help="Writes OUT/ablation.md, OUT/ablation.json and one run dir per row and seed (re-run to resume).")
@click.option("--seeds", default="0,1,2", show_default=True, callback=_seeds, help="Training seeds per row.")
@click.option("--rows", multiple=True, help="Only these rows (repeatable), e.g. --rows 'without B_t'. Default: all.")
@click.option("--layernorm", "layernorm", default="both", show_default=True,
              type=click.Choice(["trained", "frozen", "both"]),
              help="The towers' LayerNorms learn at --lr-layernorm (trained), not at all (frozen: only the prompt "
                   "modules learn), or both regimes; the loss rows run in the first regime only.")
@training_options
@click.option("--adaptive-margin/--fixed-margin", default=True, show_default=True,
              help="Base config's triplet margin (the module rows use it; the loss rows set their own).")
@device_option
def command(dataset, root, data_root, sketch_root, photo_root, split, clip_model, pretrained, out, seeds, rows, layernorm, epochs,
            batch_size, lr, lr_layernorm, alpha, beta, adaptive_margin, triplets_per_epoch, workers, device):
    """Train SpLIP once per ablation row and seed -- L_class only, L_triplet only, both, + adaptive
    margin, + L_cjs; all modules, without B_vt, without B_t, without B_v, without any prompt module,
    with the towers' LayerNorms trained and frozen -- and write the ZS / GZS table (mean ± spread over the seeds) beside the paper's numbers.

    \b
    Example:
      splip-engine demo --out demo_out
      splip-engine ablate --data-root demo_out/data --clip-model tiny --pretrained demo_out/tiny_clip.pt \\
          --epochs 24 --lr 1e-2 --lr-layernorm 3e-2 --alpha 0.1 --beta 0 --fixed-margin --workers 1 --out ablation/
      splip-engine ablate --dataset sketchy --root Sketchy/ --split sketchy21 --seeds 0,1,2 --layernorm frozen
    """
    import dataclasses

    from splip_engine.ablation import run_ablation
    from splip_engine.config import SpLIPConfig
    from splip_engine.train import TrainConfig

    data = resolve_data_roots(data_root, sketch_root, photo_root, split, dataset, root)
    base = SpLIPConfig(clip_model=clip_model, pretrained=pretrained, alpha=alpha, beta=beta,
                       adaptive_margin=adaptive_margin)
    train = TrainConfig(**dataclasses.asdict(data), epochs=epochs, batch_size=batch_size,
                        triplets_per_epoch=triplets_per_epoch, lr=lr, lr_layernorm=lr_layernorm, workers=workers,
                        device=device)
    report = run_ablation(base, train, out, seeds=seeds, rows=rows, layernorm=layernorm)
    click.echo(report.markdown())
    click.echo(f"wrote {report.files['ablation.md']} and {report.files['ablation.json']}")
