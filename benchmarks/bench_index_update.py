"""`index --update` of 1% new rows vs a full rebuild, at 1M x 512 float16 (flat and ivfpq).

Run (quiet machine): flock -x /tmp/splip-cpu.lock .venv/bin/python benchmarks/bench_index_update.py
It writes a 1M-row synthetic store under --work (StoreWriter, clustered synthetic embeddings),
builds each kind's index over it, appends 10,000 new rows to the store (StoreWriter resumes it),
then times, side by side in one process, `update_index` (what `splip-engine index --update` runs:
load, add the new rows, save the next version) against `build_index` of the grown store (what a
full `splip-engine index` runs), and checks the two answer alike (flat: identical; ivfpq: recall@100
of each against exact search on sketch-like queries).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from splip_engine.index import (
    GalleryIndex,
    StoreWriter,
    build_index,
    open_store,
    recall_at_k,
    synthetic_embeddings,
    synthetic_queries,
    update_index,
)

DIM, CLUSTERS, K = 512, 1000, 100
ENGINE = {"engine_hash": "bench", "embedding_dim": DIM}


def write_store(path: Path, n: int, n_new: int) -> np.ndarray:
    """A store of n rows (ids p0..), then reopened and grown by n_new rows (new ids), like a daily embed."""
    emb = synthetic_embeddings(n + n_new, DIM, CLUSTERS, dtype=np.float16)[0]  # (N + n_new, D)
    with StoreWriter(path, DIM, "photo", ENGINE) as writer:
        for start in range(0, n, 65536):
            rows = range(start, min(start + 65536, n))
            writer.add(emb[rows.start:rows.stop], [f"p{i}" for i in rows], [f"/g/{i}.jpg" for i in rows])
    return emb


def grow_store(path: Path, emb: np.ndarray, n: int) -> None:
    """Append rows n.. of `emb` to the store (StoreWriter resumes it)."""
    with StoreWriter(path, DIM, "photo", ENGINE) as writer:
        rows = range(n, len(emb))
        writer.add(emb[n:], [f"p{i}" for i in rows], [f"/g/{i}.jpg" for i in rows])


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/splip-bench-update"))
    parser.add_argument("-n", type=int, default=1_000_000)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    parser.add_argument("--kinds", default="flat,ivfpq")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here too")
    args = parser.parse_args()
    n, n_new = args.n, int(args.n * args.new_fraction)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    store_dir = args.work / "store"
    emb, seconds = timed(write_store, store_dir, n, n_new)
    print(f"wrote a {n:,} x {DIM} store in {seconds:.1f}s", flush=True)
    queries = synthetic_queries(64, DIM, CLUSTERS)[0]
    kinds, rows, first_build = args.kinds.split(","), [], {}
    for kind in kinds:  # yesterday's indexes, over the 1M rows
        _, first_build[kind] = timed(build_index, open_store(store_dir), args.work / f"index-{kind}", kind)
        print(f"built {kind} over {n:,} rows in {first_build[kind]:.1f}s", flush=True)
    grow_store(store_dir, emb, n)  # today the store gains 1% new rows
    grown = open_store(store_dir)
    for kind in kinds:
        index_dir = args.work / f"index-{kind}"
        report, update_s = timed(update_index, grown, index_dir)
        rebuild_dir = args.work / f"rebuild-{kind}"
        _, rebuild_s = timed(build_index, grown, rebuild_dir, kind)
        updated, rebuilt = GalleryIndex.load(index_dir), GalleryIndex.load(rebuild_dir)
        if kind == "flat":
            same = all(np.array_equal(a, b) for a, b in zip(updated.search(queries, K), rebuilt.search(queries, K)))
            quality = "identical results" if same else "DIFFERENT results"
        else:
            exact = GalleryIndex.load(args.work / "index-flat") if "flat" in kinds else rebuilt
            quality = (f"recall@{K} update {recall_at_k(updated, exact, queries, K):.3f} / "
                       f"rebuild {recall_at_k(rebuilt, exact, queries, K):.3f}")
        row = {"kind": kind, "rows": n, "new_rows": n_new, "first_build_s": round(first_build[kind], 1),
               "update_s": round(update_s, 1), "rebuild_s": round(rebuild_s, 1),
               "speedup": round(rebuild_s / update_s, 1), "version": report["version"],
               "rebuilt": report["rebuilt"], "quality": quality}
        rows.append(row)
        print(json.dumps(row), flush=True)
        shutil.rmtree(rebuild_dir)
    print("\n| index | gallery | new rows | `index --update` (s) | full rebuild (s) | rebuild / update | results |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['kind']} | {r['rows']:,} | {r['new_rows']:,} | {r['update_s']} | {r['rebuild_s']} | "
              f"{r['speedup']}x | {r['quality']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
