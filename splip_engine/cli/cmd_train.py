"""`splip-engine train`: learn SpLIP prompts on the seen classes of a dataset."""
from __future__ import annotations

import click

from splip_engine.cli.options import (check_pretrained, data_options, decode_budget_options, device_option,
                                      resolve_data_roots, training_options)


@click.command("train")
@data_options
@click.option("--clip-model", default="ViT-B-32", show_default=True, help="open_clip model name, or 'tiny'.")
@click.option("--pretrained", default="openai", show_default=True, callback=check_pretrained,
              help="open_clip tag, a local weights file, or '' for random init.")
@click.option("--vt-context", default="template", show_default=True, type=click.Choice(["template", "classes"]))
@click.option("--out", default="runs/splip", show_default=True, type=click.Path(), help="Run directory.")
@training_options
@click.option("--fine-grained", is_flag=True, help="Instance-level triplets (paired photo as positive).")
@click.option("--no-augment", is_flag=True, help="No random flip / resized crop.")
@click.option("--seed", default=0, show_default=True, type=int)
@device_option
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last epoch.")
@decode_budget_options
def command(dataset, root, data_root, sketch_root, photo_root, split, clip_model, pretrained, vt_context, out, epochs, batch_size,
            lr, lr_layernorm, alpha, beta, triplets_per_epoch, fine_grained, no_augment, workers, seed, device, resume):
    """Train SpLIP prompts for a frozen CLIP; writes OUT/checkpoint/ every epoch and OUT/log.jsonl.

    \b
    Example:
      splip-engine data mini --out mini/
      splip-engine train --data-root mini/ --clip-model tiny --pretrained '' --epochs 5 --out runs/mini
      splip-engine train --dataset sketchy --root Sketchy/ --split sketchy21
      splip-engine train --sketch-root my/sketch --photo-root my/photo --split my/unseen.txt
    """
    import dataclasses

    from splip_engine.config import SpLIPConfig
    from splip_engine.train import TrainConfig, run_train

    data = resolve_data_roots(data_root, sketch_root, photo_root, split, dataset, root)
    model_cfg = SpLIPConfig(clip_model=clip_model, pretrained=pretrained, vt_context=vt_context, alpha=alpha,
                            beta=beta, seed=seed)
    cfg = TrainConfig(**dataclasses.asdict(data), out=out, epochs=epochs, batch_size=batch_size,
                      triplets_per_epoch=triplets_per_epoch, lr=lr, lr_layernorm=lr_layernorm,
                      fine_grained=fine_grained, augment=not no_augment, workers=workers, seed=seed, device=device)
    report = run_train(model_cfg, cfg, resume=resume)
    click.echo(f"trained {report.epochs_run} epochs in {report.seconds:.0f} s: final loss {report.final_loss:.4f}, "
               f"validation mAP@all {report.val_map_initial:.4f} -> {report.val_map_final:.4f}")
    if report.bad_images:
        click.echo(f"skipped {len(report.bad_images)} unreadable images, e.g. {report.bad_images[:3]}")
    click.echo(f"checkpoint: {report.checkpoint}")
