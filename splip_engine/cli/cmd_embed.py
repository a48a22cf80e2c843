"""`splip-engine embed`: embed a gallery (or queries) into a store, resumably."""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys

import click

from splip_engine.cli.options import backend_option, batch_size_option, decode_budget_options, device_option

_KINDS = ["auto", "folder", "list", "parquet-paths", "parquet-bytes", "tar", "ndjson"]  # runtime.inputs.INPUT_KINDS


@click.command("embed")
@click.option("--engine", "engine_dir", required=True, type=click.Path(), help="Engine dir from `export` (or a checkpoint dir).")
@click.option("--input", "source", required=True,
              help="A directory of images (recursive; ids = relative paths), a .txt file list, a .parquet of paths or "
                   "of image bytes (img2dataset), webdataset / img2dataset tar shards (a brace pattern "
                   "'shards/{00000..00099}.tar', a directory of .tar or a .txt list of them; ids = <shard>/<key>) "
                   "or QuickDraw .ndjson (ids = key_id).")
@click.option("--out", required=True, type=click.Path(), help="Store directory (created, or resumed when it exists).")
@click.option("--modality", default="photo", show_default=True, type=click.Choice(["photo", "sketch"]))
@click.option("--input-kind", "kind", default="auto", show_default=True, type=click.Choice(_KINDS),
              help="What --input is; auto detects it.")
@click.option("--image-column", default="jpg", show_default=True, help="Image-bytes column of a parquet input.")
@click.option("--id-column", default="key", show_default=True, help="Id column of a parquet input of image bytes.")
@backend_option
@device_option
@batch_size_option
@click.option("--workers", default=None, type=click.IntRange(min=0),
              help="Decode worker processes, each reading whole shards (0 = in the main process) [default: one per core].")
@click.option("--shard-size", default=None, type=click.IntRange(min=1), help="Rows per store shard [default: 16384].")
@click.option("--commit-every-s", "commit_interval_s", default=30.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Commit what is embedded at least this often (besides every full shard): the most work a crash loses.")
@click.option("--retry-errors", is_flag=True, help="Try the inputs listed in OUT/errors.jsonl again.")
@click.option("--ray", "use_ray", is_flag=True, help="Run on Ray Data (local cluster, or RAY_ADDRESS).")
@click.option("--num-actors", default=2, show_default=True, type=click.IntRange(min=1), help="Encoder actors with --ray.")
@decode_budget_options
def command(engine_dir, source, out, modality, kind, image_column, id_column, backend, device, batch_size, workers,
            shard_size, commit_interval_s, retry_errors, use_ray, num_actors):
    """Embed every image of --input into the store --out (float16 shards + parquet ids and metadata).

    Bad inputs (a corrupt or non-image member, a record without an image, an empty or truncated
    shard) are skipped and listed in OUT/errors.jsonl with their shard and key. Re-running after a
    crash continues where it stopped: every good input ends up exactly once in the store, and
    shards read whole before are not read again. Ctrl-C commits what is embedded and exits with
    code 130, saying how to resume.

    \b
    Example:
      splip-engine embed --engine engines/ --input photos/ --out gallery_store/
      splip-engine embed --engine engines/ --input 'shards/{00000..00099}.tar' --out store/
      splip-engine embed --engine engines/ --input laion.parquet --image-column jpg --id-column key --out store/
      splip-engine embed --engine engines/ --input shards/ --out store/ --ray --num-actors 4
    """
    from splip_engine.runtime.inputs import InputOptions

    options = InputOptions(image_column=image_column, id_column=id_column)
    try:
        report = _run(engine_dir, source, out, modality, kind, options, backend, device, batch_size, workers,
                      shard_size, commit_interval_s, retry_errors, use_ray, num_actors)
    except KeyboardInterrupt:  # the store committed what was embedded on the way out
        _say_interrupted(out)
        if use_ray:
            sys.exit(130)  # through atexit: ray.shutdown stops the local cluster
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # skip the interpreter's teardown: unloading torch alone takes ~2 s here
    click.echo(f"embedded {report.embedded} images into {report.store} "
               f"({report.already_done} already there, {report.units_skipped} units read before, "
               f"{report.failed} skipped -> {out}/errors.jsonl)")
    click.echo("time (s): " + json.dumps({k: round(v, 2) for k, v in report.timings.items()})
               + f"; {report.images_per_s:.1f} img/s; peak RSS {report.peak_rss_mb:.0f} MiB")


def _run(engine_dir, source, out, modality, kind, options, backend, device, batch_size, workers, shard_size,
         commit_interval_s, retry_errors, use_ray, num_actors):
    """The embedding job the options ask for (local or on Ray): its EmbedReport."""
    if use_ray:
        from splip_engine.runtime.ray_job import run_embed_ray

        return run_embed_ray(engine_dir, source, out, modality=modality, backend=backend,
                             device="cpu" if device == "auto" else device, batch_size=batch_size,
                             num_actors=num_actors, shard_size=shard_size, kind=kind, options=options,
                             retry_errors=retry_errors, commit_interval_s=commit_interval_s)
    from splip_engine.runtime import load_engine
    from splip_engine.runtime.embed_job import run_embed

    with load_engine(engine_dir, backend=backend, device=device, batch_size=batch_size) as encoder:
        return run_embed(encoder, source, out, modality=modality, batch_size=batch_size, workers=workers,
                         shard_size=shard_size, kind=kind, options=options, retry_errors=retry_errors,
                         commit_interval_s=commit_interval_s)


def _say_interrupted(out: str) -> None:
    """One line after Ctrl-C: what the store holds now and the command that resumes it."""
    from splip_engine.errors import SpLIPError
    from splip_engine.index.store import open_store

    try:
        store = open_store(out)
        held = f"{store.count} rows and {len(store.errors())} errors are committed in {out}"
    except SpLIPError:  # interrupted before the store was created
        held = f"nothing more is committed in {out}"
    command = shlex.join(["splip-engine", *sys.argv[sys.argv.index("embed"):]]) if "embed" in sys.argv else "the same command"
    click.echo(f"interrupted: {held}; run {command} again to resume", err=True)
