"""`splip-engine embed`: embed a gallery (or queries) into a store, resumably."""
from __future__ import annotations

import json

import click

from splip_engine.cli.options import backend_option, batch_size_option, device_option


@click.command("embed")
@click.option("--engine", "engine_dir", required=True, type=click.Path(), help="Engine dir from `export` (or a checkpoint dir).")
@click.option("--input", "source", required=True, type=click.Path(),
              help="A directory (searched recursively; ids = relative paths), a .txt file list or a .parquet with a path column.")
@click.option("--out", required=True, type=click.Path(), help="Store directory (created, or resumed when it exists).")
@click.option("--modality", default="photo", show_default=True, type=click.Choice(["photo", "sketch"]))
@backend_option
@device_option
@batch_size_option
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=0),
              help="Decode/preprocess worker processes (0 = in the main process).")
@click.option("--shard-size", default=4096, show_default=True, type=click.IntRange(min=1), help="Rows per store shard.")
@click.option("--ray", "use_ray", is_flag=True, help="Run on Ray Data (local cluster, or RAY_ADDRESS).")
@click.option("--num-actors", default=2, show_default=True, type=click.IntRange(min=1), help="Encoder actors with --ray.")
def command(engine_dir, source, out, modality, backend, device, batch_size, workers, shard_size, use_ray, num_actors):
    """Embed every image of --input into the store --out (float16 shards + parquet ids).

    Bad files are skipped and listed in OUT/errors.jsonl. Re-running after a crash continues
    where it stopped: every good input ends up exactly once in the store.

    \b
    Example:
      splip-engine embed --engine engines/ --input photos/ --out gallery_store/
      splip-engine embed --engine engines/ --input photos.parquet --out store/ --ray --num-actors 4
    """
    if use_ray:
        from splip_engine.runtime.ray_job import run_embed_ray

        report = run_embed_ray(engine_dir, source, out, modality=modality, backend=backend,
                               device="cpu" if device == "auto" else device, batch_size=batch_size,
                               num_actors=num_actors, shard_size=shard_size)
    else:
        from splip_engine.runtime import load_engine
        from splip_engine.runtime.embed_job import run_embed

        with load_engine(engine_dir, backend=backend, device=device, batch_size=batch_size) as encoder:
            report = run_embed(encoder, source, out, modality=modality, batch_size=batch_size,
                               workers=workers, shard_size=shard_size)
    click.echo(f"embedded {report.embedded} images into {report.store} "
               f"({report.already_done} already there, {report.failed} skipped -> {out}/errors.jsonl)")
    click.echo("time (s): " + json.dumps({k: round(v, 2) for k, v in report.timings.items()})
               + f"; {report.images_per_s:.1f} img/s")
