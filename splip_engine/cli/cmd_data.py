"""`splip-engine data`: dataset utilities (the synthetic mini dataset)."""
from __future__ import annotations

from pathlib import Path

import click


@click.group("data")
def command() -> None:
    """Dataset utilities.

    \b
    Example:
      splip-engine data mini --out data/mini
    """


@command.command("mini")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New (or empty) folder to write.")
@click.option("--classes", default=16, show_default=True, type=click.IntRange(min=2), help="Number of shape classes.")
@click.option("--per-class", default=24, show_default=True, type=click.IntRange(min=2),
              help="Sketch/photo pairs per class.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed, same bytes.")
@click.option("--size", default=64, show_default=True, type=click.IntRange(min=16), help="Image side in pixels.")
def mini(out: Path, classes: int, per_class: int, seed: int, size: int) -> None:
    """Write a deterministic synthetic SBIR dataset: OUT/sketch/<class>/*.png,
    OUT/photo/<class>/*.jpg (sketch i pairs with photo i), OUT/unseen.txt and OUT/README.txt.

    \b
    Example:
      splip-engine data mini --out data/mini --classes 16 --per-class 24 --seed 0
    """
    from splip_engine.data.mini import make_mini_dataset

    made = make_mini_dataset(out, classes=classes, per_class=per_class, seed=seed, size=size)
    click.echo(f"wrote {len(made.classes)} classes x {made.per_class} sketch/photo pairs to {made.root}")
    click.echo(f"unseen classes ({made.unseen_file}): {', '.join(made.unseen)}")
