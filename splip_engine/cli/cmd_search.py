"""`splip-engine search`: top-k gallery photos for sketch files, as JSON (and an HTML page)."""
from __future__ import annotations

import json
import sys

import click

from splip_engine.cli.options import backend_option, decode_budget_options, device_option
from splip_engine.errors import SpLIPError


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
@decode_budget_options
def command(engine_dir, index_dir, k, modality, html_out, backend, device, queries):
    """Search the gallery index with QUERIES (image files) and print JSON results.

    A query that cannot be read does not stop the others: it is listed on stderr and in the JSON
    as {"query", "error", "results": []}, and the exit code says so.

    \b
    Exit codes:
      0  every query answered
      3  some queries could not be read (the others are answered; see "error" in the JSON)
      2  no query could be read, or a usage / engine / index error

    \b
    Example:
      splip-engine search --engine engines/ --index index/ -k 5 sketch1.png sketch2.png
      splip-engine search --engine engines/ --index index/ --html results.html queries/*.png
    """
    from splip_engine.index import GalleryIndex
    from splip_engine.retrieval import search_readable
    from splip_engine.serve.results_page import write_results_html
    from splip_engine.runtime import load_engine

    index = GalleryIndex.load(index_dir)
    with load_engine(engine_dir, backend=backend, device=device) as encoder:
        index.check_compatible(encoder.manifest)
        results = search_readable(encoder, index, list(queries), k=k, modality=modality)
    click.echo(json.dumps(results, indent=2))
    failed = [entry for entry in results if "error" in entry]
    if html_out and len(failed) < len(results):
        answered = [entry for entry in results if "error" not in entry]
        click.echo(f"wrote {write_results_html(answered, html_out)}", err=True)
    if len(results) == 1 and failed:
        raise SpLIPError(f"query {failed[0]['query']}: {failed[0]['error']}")
    for entry in failed:
        click.echo(f"skipped query {entry['query']}: {entry['error']}", err=True)
    if failed and len(failed) == len(results):
        raise SpLIPError(f"none of the {len(results)} queries could be read (listed above)")
    if failed:
        click.echo(f"warning: {len(failed)} of {len(results)} queries could not be read (listed above and as "
                   f'"error" in the JSON); the other {len(results) - len(failed)} are answered (exit code 3)', err=True)
        sys.exit(3)
