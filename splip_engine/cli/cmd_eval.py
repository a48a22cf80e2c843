"""`splip-engine eval`: ZS / GZS / FG-ZS retrieval metrics of a checkpoint or an engine."""
from __future__ import annotations

import json

import click

from splip_engine.cli.options import (backend_option, batch_size_option, data_options, decode_budget_options,
                                      device_option, resolve_data_roots)


@click.command("eval")
@click.option("--model", "model_path", default=None, type=click.Path(),
              help="Checkpoint dir (from train) or engine dir (from export). Default: the latest training run.")
@data_options
@click.option("--modes", default="zs,gzs,fg", show_default=True, help="Comma-separated: zs, gzs, fg.")
@click.option("--ks", default="100,200", show_default=True, help="K values for mAP@K / P@K.")
@click.option("--gzs-seen-photos", default="all", show_default=True, type=click.Choice(["all", "held-out"]),
              help="Seen-class photos in the GZS gallery: all of them (training photos included), or only those "
                   "the training run held out (never trained on).")
@click.option("--holdout-fraction", default=None, type=click.FloatRange(0, 1, max_open=True),
              help="With --gzs-seen-photos held-out: the run's held-out fraction. Default: the run's "
                   "train_config.json next to --model, else 0.1 (train's default).")
@click.option("--holdout-seed", default=None, type=int,
              help="With --gzs-seen-photos held-out: the run's seed. Default: from train_config.json, else 0.")
@click.option("--out", type=click.Path(), default=None, help="Write the metrics as JSON here.")
@backend_option
@device_option
@batch_size_option
@decode_budget_options
def command(model_path, dataset, root, data_root, sketch_root, photo_root, split, modes, ks, gzs_seen_photos,
            holdout_fraction, holdout_seed, out, backend, device, batch_size):
    """Evaluate zero-shot SBIR: unseen sketches against unseen photos (zs), against seen + unseen
    photos (gzs), and instance-level within the class (fg, Sketchy file naming).

    \b
    Example:
      splip-engine eval --data-root mini/ --split mini/unseen.txt
      splip-engine eval --model engines/ --dataset sketchy --root Sketchy/ --split sketchy21 --out metrics.json
      splip-engine eval --dataset tuberlin --root TU-Berlin/ --gzs-seen-photos held-out
    """
    from splip_engine.evaluation import format_metrics_table
    from splip_engine.export import find_latest_checkpoint
    from splip_engine.io_utils import write_text_atomic
    from splip_engine.protocol import evaluate_protocol, gzs_seen_split
    from splip_engine.runtime import load_engine
    from splip_engine.train import read_holdout

    data = resolve_data_roots(data_root, sketch_root, photo_root, split, dataset, root)
    folder = data.open_folder()
    seen, unseen = folder.split_classes(data.split)
    model_path = model_path or find_latest_checkpoint()
    fraction, seed = read_holdout(model_path, holdout_fraction, holdout_seed)
    encoder = load_engine(model_path, backend=backend, device=device, batch_size=batch_size)
    seen_gallery = gzs_seen_split(folder, seen, gzs_seen_photos, fraction, seed)
    results = evaluate_protocol(encoder, folder.subset(unseen), seen_gallery,
                                modes=[m.strip() for m in modes.split(",") if m.strip()],
                                ks=tuple(int(k) for k in ks.split(",")), batch_size=batch_size)
    meta = results.pop("_meta") | {"gzs_seen_photos": gzs_seen_photos}
    if gzs_seen_photos == "held-out":
        meta["gzs_holdout"] = {"fraction": fraction, "seed": seed}
    click.echo(format_metrics_table(results))
    click.echo(f"{meta['n_sketches']} query sketches, {meta['n_photos']} unseen photos, "
               f"{len(meta['skipped'])} unreadable files skipped, {meta['seconds']} s")
    if out:
        write_text_atomic(out, json.dumps({**results, "_meta": meta}, indent=2))
        click.echo(f"wrote {out}")
