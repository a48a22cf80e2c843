"""`splip-engine index`: build a FAISS search index over an embedding store."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("index")
@click.option("--store", "store_dir", required=True, type=click.Path(path_type=Path),
              help="Embedding store written by `splip-engine embed`.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Index directory to write.")
@click.option("--kind", default="auto", show_default=True, type=click.Choice(["auto", "flat", "ivfpq", "hnsw"]),
              help="flat = exact; ivfpq / hnsw = approximate; auto = flat up to 200k vectors, then ivfpq.")
@click.option("--eval-queries", type=click.Path(dir_okay=False, path_type=Path),
              help="A .npy (Q, D) of sketch query embeddings: tune the index for --target-recall on half, "
                   "report recall@k against exact search on the other half.")
@click.option("-k", "k", default=100, show_default=True, type=click.IntRange(min=1), help="k of recall@k.")
@click.option("--target-recall", default=0.95, show_default=True, type=click.FloatRange(0, 1),
              help="Recall the search parameters are tuned for (with --eval-queries).")
@click.option("--memory-budget-gb", type=click.FloatRange(min=0, min_open=True),
              help="Memory the index may use; auto picks a compact kind above it [default: 8].")
def command(store_dir: Path, out: Path, kind: str, eval_queries: Path | None, k: int, target_recall: float,
            memory_budget_gb: float | None) -> None:
    """Build a search index over an embedding store and save it (atomically) to --out.

    \b
    Example:
      splip-engine index --store gallery_store/ --out gallery_index/
      splip-engine index --store gallery_store/ --out gallery_index/ --kind ivfpq \\
          --eval-queries sketch_embeddings.npy -k 100
    """
    from tqdm import tqdm

    from splip_engine.index.build import build_index, load_queries
    from splip_engine.index.kinds import DEFAULT_MEMORY_BUDGET
    from splip_engine.index.store import open_store

    store = open_store(store_dir)
    queries = load_queries(eval_queries) if eval_queries else None
    budget = int(memory_budget_gb * 2**30) if memory_budget_gb else DEFAULT_MEMORY_BUDGET
    with tqdm(total=store.count, unit="vec", desc="indexing", leave=False) as bar:
        report = build_index(store, out, kind, eval_queries=queries, k=k, target_recall=target_recall,
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
