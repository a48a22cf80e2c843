"""`splip-engine eval`: ZS / GZS / FG-ZS retrieval metrics of a checkpoint or an engine."""
from __future__ import annotations

import json

import click

from splip_engine.cli.options import (backend_option, batch_size_option, data_options, device_option,
                                      resolve_data_roots)


@click.command("eval")
@click.option("--model", "model_path", default=None, type=click.Path(),
              help="Checkpoint dir (from train) or engine dir (from export). Default: the latest training run.")
@data_options
@click.option("--modes", default="zs,gzs,fg", show_default=True, help="Comma-separated: zs, gzs, fg.")
@click.option("--ks", default="100,200", show_default=True, help="K values for mAP@K / P@K.")
@click.option("--out", type=click.Path(), default=None, help="Write the metrics as JSON here.")
@backend_option
@device_option
@batch_size_option
def command(model_path, data_root, sketch_root, photo_root, split, modes, ks, out, backend, device, batch_size):
    """Evaluate zero-shot SBIR: unseen sketches against unseen photos (zs), against seen + unseen
    photos (gzs), and instance-level within the class (fg, Sketchy file naming).

    \b
    Example:
      splip-engine eval --data-root mini/ --split mini/unseen.txt
      splip-engine eval --model engines/ --sketch-root Sketchy/sketch --photo-root Sketchy/photo --split sketchy25
    """
    from splip_engine.data.folder import SBIRFolder
    from splip_engine.evaluation import format_metrics_table
    from splip_engine.export import find_latest_checkpoint
    from splip_engine.io_utils import write_text_atomic
    from splip_engine.protocol import evaluate_protocol
    from splip_engine.runtime import load_engine

    sketch_root, photo_root, split = resolve_data_roots(data_root, sketch_root, photo_root, split)
    folder = SBIRFolder(sketch_root, photo_root)
    seen, unseen = folder.split_classes(split)
    encoder = load_engine(model_path or find_latest_checkpoint(), backend=backend, device=device, batch_size=batch_size)
    results = evaluate_protocol(encoder, folder.subset(unseen), folder.subset(seen),
                                modes=[m.strip() for m in modes.split(",") if m.strip()],
                                ks=tuple(int(k) for k in ks.split(",")), batch_size=batch_size)
    meta = results.pop("_meta")
    click.echo(format_metrics_table(results))
    click.echo(f"{meta['n_sketches']} query sketches, {meta['n_photos']} unseen photos, "
               f"{len(meta['skipped'])} unreadable files skipped, {meta['seconds']} s")
    if out:
        write_text_atomic(out, json.dumps({**results, "_meta": meta}, indent=2))
        click.echo(f"wrote {out}")
