"""`splip-engine demo`: the whole pipeline on the embedded default, offline, in a few minutes."""
from __future__ import annotations

import click


@click.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(), help="Output directory (must be empty).")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="SpLIP training epochs (default: the demo's).")
@click.option("--pretrain-steps", default=None, type=click.IntRange(min=1),
              help="Steps of the tiny stand-in CLIP's pre-training (default: the demo's).")
@click.option("--seed", default=0, show_default=True, type=int)
def command(out, epochs, pretrain_steps, seed):
    """Make the mini dataset, pre-train a tiny CLIP (standing in for downloaded weights), train
    SpLIP prompts, export --fp16, embed the gallery, build the index, search the unseen-class
    sketches, and report ZS / GZS / FG metrics (plain CLIP, untrained and trained SpLIP) plus an
    HTML page.

    \b
    Example:
      splip-engine demo
      splip-engine demo --out /tmp/demo --epochs 4 --pretrain-steps 500
    """
    import dataclasses

    from splip_engine.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out, seed=seed)
    overrides = {"epochs": epochs, "pretrain_steps": pretrain_steps}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    report = run_demo(cfg)
    click.echo("\nexport --fp16:\n  " + "\n  ".join(report.export))
    click.echo("\nZero-shot SBIR on the unseen classes (in %):\n" + report.table())
    click.echo("\nseconds per stage: " + ", ".join(f"{k} {v}" for k, v in report.seconds.items()))
    for name, path in report.files.items():
        click.echo(f"{name:>14}: {path}")
