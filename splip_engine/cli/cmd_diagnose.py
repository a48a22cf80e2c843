"""`splip-engine diagnose`: what B_t (vision -> text) carries in a checkpoint."""
from __future__ import annotations

import click

from splip_engine.cli.options import data_options, resolve_data_roots


@click.command("diagnose")
@click.option("--model", "model_path", required=True, type=click.Path(), help="Checkpoint dir (from train or ablate).")
@data_options
@click.option("--at-init", is_flag=True,
              help="Diagnose the checkpoint's config freshly initialised (its seed), not its trained weights.")
@click.option("--max-images", default=256, show_default=True, type=click.IntRange(min=2),
              help="Unseen-class images per modality for the prompt statistics.")
@click.option("--grad-batches", default=4, show_default=True, type=click.IntRange(min=1),
              help="Training batches (seen classes) the gradient norms are averaged over.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2), help="Triplets per batch.")
@click.option("--no-eval", is_flag=True, help="Skip the ZS / GZS scores with T as trained and with T = its mean.")
@click.option("--out", type=click.Path(), default=None, help="Write the numbers as JSON here.")
def command(model_path, dataset, root, data_root, sketch_root, photo_root, split, at_init, max_images, grad_batches,
            batch_size, no_eval, out):
    """Measure what B_t carries: how much the text prompts T vary across images relative to their
    mean (and each stage before them), how much the prompted text pass's states W_l and B_vt's
    visual prompts V_ms,l change when T is replaced by its mean over the data set, the ZS / GZS
    mAP@all with T as trained and with T = its mean, and the gradient norm reaching each trainable
    block over a few training batches.

    \b
    Example:
      splip-engine diagnose --model runs/splip/checkpoint --data-root demo_out/data
      splip-engine diagnose --model ablation/runs/frozen/all-prompt-modules-base-config/seed0/checkpoint \\
          --data-root demo_out/data --at-init --out diag_init.json
    """
    import dataclasses
    import json

    from splip_engine.checkpoint import load_checkpoint
    from splip_engine.diagnose import diagnose, format_report
    from splip_engine.io_utils import write_text_atomic
    from splip_engine.model import build_model
    from splip_engine.train import TrainConfig, read_holdout

    data = resolve_data_roots(data_root, sketch_root, photo_root, split, dataset, root)
    model = load_checkpoint(model_path)
    if at_init:
        model = build_model(model.cfg)  # the mapping blocks as `train` starts them (seeded by the config)
    fraction, seed = read_holdout(model_path)
    train = TrainConfig(**dataclasses.asdict(data), val_fraction=fraction, seed=seed)
    stats = diagnose(model, train, max_images=max_images, grad_batches=grad_batches, batch_size=batch_size,
                     evaluate=not no_eval)
    stats["model_path"], stats["at_init"] = str(model_path), at_init
    click.echo(format_report(stats))
    if out:
        write_text_atomic(out, json.dumps(stats, indent=2))
        click.echo(f"wrote {out}")
