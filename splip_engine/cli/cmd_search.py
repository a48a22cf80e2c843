"""`splip-engine search`: top-k gallery photos for sketch files, as JSON (and an HTML page)."""
from __future__ import annotations

import json

import click

from splip_engine.cli.options import backend_option, device_option


@click.command("search")
@click.option("--engine", "engine_dir", required=True, type=click.Path(), help="Engine dir from `export`.")
@click.option("--index", "index_dir", required=True, type=click.Path(), help="Index dir from `index`.")
@click.option("-k", "--top-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Results per query.")
@click.option("--modality", default="sketch", show_default=True, type=click.Choice(["sketch", "photo"]),
              help="Modality of the query images.")
@click.option("--html", "html_out", type=click.Path(), default=None, help="Also write a results page here.")
@backend_option
@device_option
@click.argument("queries", nargs=-1, required=True, type=click.Path())
def command(engine_dir, index_dir, k, modality, html_out, backend, device, queries):
    """Search the gallery index with QUERIES (image files) and print JSON results.

    \b
    Example:
      splip-engine search --engine engines/ --index index/ -k 5 sketch1.png sketch2.png
      splip-engine search --engine engines/ --index index/ --html results.html queries/*.png
    """
    from splip_engine.index import GalleryIndex
    from splip_engine.retrieval import search_images
    from splip_engine.serve.results_page import write_results_html
    from splip_engine.runtime import load_engine

    index = GalleryIndex.load(index_dir)
    with load_engine(engine_dir, backend=backend, device=device) as encoder:
        index.check_compatible(encoder.manifest)
        results = search_images(encoder, index, list(queries), k=k, modality=modality)
    click.echo(json.dumps(results, indent=2))
    if html_out:
        click.echo(f"wrote {write_results_html(results, html_out)}", err=True)
