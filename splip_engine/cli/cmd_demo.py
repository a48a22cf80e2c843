"""`splip-engine demo`: the whole pipeline on the embedded default, offline, in a few minutes."""
from __future__ import annotations

import click


@click.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(), help="Output directory (must be empty).")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="SpLIP training epochs (default: the demo's).")
@click.option("--pretrain-steps", default=None, type=click.IntRange(min=1),
              help="Steps of the tiny stand-in CLIP's pre-training (default: the demo's).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the dataset and the stand-in CLIP, and of the first SpLIP training run.")
@click.option("--seeds", default=None, type=click.IntRange(min=1),
              help="SpLIP training runs (seeds SEED, SEED+1, ...); the table gives mean ± spread (default: 3).")
def command(out, epochs, pretrain_steps, seed, seeds):
    """Make the mini dataset, pre-train a tiny CLIP on photos and clip-art (standing in for
    downloaded weights: it never sees a free-hand sketch), train SpLIP prompts on the seen classes
    (several seeds), export --fp16, embed the gallery, build the index, search the unseen-class
    sketches, and report ZS / GZS / FG metrics (plain CLIP, untrained and trained SpLIP, mean ±
    spread over the seeds) plus an HTML page; it ends with the `serve` command that opens the
    demo's gallery in the draw-to-search page.

    \b
    Example:
      splip-engine demo
      splip-engine demo --out /tmp/demo --seeds 1 --epochs 4 --pretrain-steps 500
    """
    import dataclasses

    from splip_engine.demo import DemoConfig, run_demo

    cfg = DemoConfig(out=out, seed=seed)
    overrides = {"epochs": epochs, "pretrain_steps": pretrain_steps, "seeds": seeds}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    report = run_demo(cfg)
    click.echo("\nexport --fp16:\n  " + "\n  ".join(report.export))
    click.echo(f"\nZero-shot SBIR on the unseen classes (in %, mean ± spread over {cfg.seeds} training "
               f"seed{'s' if cfg.seeds > 1 else ''}):\n" + report.table())
    click.echo("\nseconds per stage: " + ", ".join(f"{k} {v}" for k, v in report.seconds.items()))
    for name, path in report.files.items():
        click.echo(f"{name:>14}: {path}")
    click.echo(f"\nDraw a sketch and see the gallery's closest photos as you draw: run\n  {report.serve_command}\n"
               "and open http://127.0.0.1:8000/")
