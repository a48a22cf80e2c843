"""`splip-engine index`: build a FAISS search index over an embedding store, or update one."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("index")
@click.option("--store", "store_dir", required=True, type=click.Path(path_type=Path),
              help="Embedding store written by `splip-engine embed`.")
@click.option("--out", "--index", "index_dir", required=True, type=click.Path(path_type=Path),
              help="Index directory to write (--update: the index to bring up to date).")
@click.option("--update", is_flag=True,
              help="Add the store's new rows to the existing index and drop ids no longer in the store, saved "
                   "atomically as the next version (flat, ivfpq: in place; hnsw rebuilds when ids were removed).")
@click.option("--kind", default="auto", show_default=True, type=click.Choice(["auto", "flat", "ivfpq", "hnsw"]),
              help="flat = exact; ivfpq / hnsw = approximate; auto = flat up to 200k x 512 (1.6M x 64) float16 vectors, then ivfpq.")
@click.option("--eval-queries", type=click.Path(dir_okay=False, path_type=Path),
              help="A .npy (Q, D) of sketch query embeddings: tune the index for --target-recall on half, "
                   "report recall@k against exact search on the other half.")
@click.option("-k", "k", default=100, show_default=True, type=click.IntRange(min=1), help="k of recall@k.")
@click.option("--target-recall", default=0.95, show_default=True, type=click.FloatRange(0, 1),
              help="Recall the search parameters are tuned for (with --eval-queries).")
@click.option("--memory-budget-gb", type=click.FloatRange(min=0, min_open=True),
              help="Memory the index may use; auto picks a compact kind above it [default: 8].")
@click.pass_context
def command(ctx: click.Context, store_dir: Path, index_dir: Path, update: bool, kind: str, eval_queries: Path | None,
            k: int, target_recall: float, memory_budget_gb: float | None) -> None:
    """Build a search index over an embedding store and save it (atomically) to --out, or with
    --update bring an existing index up to date with its store (a running `serve` switches to the
    new version on SIGHUP or POST /admin/reload).

    \b
    Example:
      splip-engine index --store gallery_store/ --out gallery_index/
      splip-engine index --store gallery_store/ --out gallery_index/ --kind ivfpq \\
          --eval-queries sketch_embeddings.npy -k 100
      splip-engine index --update --store gallery_store/ --index gallery_index/
    """
    from tqdm import tqdm

    from splip_engine.index.build import build_index, load_queries, update_index
    from splip_engine.index.kinds import DEFAULT_MEMORY_BUDGET
    from splip_engine.index.store import open_store

    store = open_store(store_dir)
    if update:
        build_only = [f"--{name.replace('_', '-')}" for name in ("kind", "eval_queries", "memory_budget_gb")
                      if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT]
        if build_only:
            raise click.UsageError(f"{', '.join(build_only)} apply to a build, not to --update (which keeps the "
                                   "index's kind and parameters)")
        with tqdm(unit="vec", desc="updating", leave=False) as bar:
            report = update_index(store, index_dir, progress=bar.update)
        how = f"rebuilt ({report['rebuilt']})" if report["rebuilt"] else "in place"
        click.echo(f"updated {report['kind']} index {report['out']} to version {report['version']} {how}: "
                   f"+{report['added']:,} added, -{report['removed']:,} removed, {report['count']:,} rows, "
                   f"in {report['seconds']:.1f}s")
        return
    queries = load_queries(eval_queries) if eval_queries else None
    budget = int(memory_budget_gb * 2**30) if memory_budget_gb else DEFAULT_MEMORY_BUDGET
    with tqdm(total=store.count, unit="vec", desc="indexing", leave=False) as bar:
        report = build_index(store, index_dir, kind, eval_queries=queries, k=k, target_recall=target_recall,
                             memory_budget_bytes=budget, progress=bar.update)
    params = " ".join(f"{name}={value}" for name, value in report["params"].items())
    click.echo(f"built {report['kind']} index of {report['count']:,} x {report['dim']} embeddings "
               f"in {report['build_seconds']:.1f}s -> {report['out']}")
    if params:
        click.echo(f"params: {params}")
    if "recall" in report:
        how = "exact search" if report["kind"] == "flat" else (
            f"tuned {report['tuned']} for {report['target_recall']:.2f} on the other half")
        click.echo(f"recall@{report['k']} vs exact flat on {report['recall_queries']} queries: "
                   f"{report['recall']:.4f} ({how})")
        if not report["target_reached"]:
            why = (f"the tuning half reached {report['tuned_recall']:.4f}, the held-out half did not: tune with "
                   "more --eval-queries or a higher --target-recall for margin" if report["tuned_reached"] else
                   f"no search parameters tried reach it (best {report['tuned_recall']:.4f} on the tuning half): "
                   "use --kind flat (exact) or --kind hnsw for this gallery")
            click.echo(f"warning: recall@{report['k']} {report['recall']:.4f} is BELOW the target "
                       f"{report['target_recall']:.2f}; {why}")
