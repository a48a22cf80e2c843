"""The offline embedding job at scale: webdataset shards -> `splip-engine embed` -> `index` ->
search, against bare decoding and the bare encoder measured in the same run, plus a SIGKILL at
~50% and the resume.

    python benchmarks/shard_data.py --out /tmp/splip-1m --images 1000000 --shards 200 --size 64
    flock -x /tmp/splip-cpu.lock python benchmarks/bench_embed_job.py --shards /tmp/splip-1m \\
        --work /tmp/splip-1m-work --phases bare,configs,job,index --out benchmarks/results/embed_1m.json
    flock -x /tmp/splip-cpu.lock python benchmarks/bench_embed_job.py --shards /tmp/splip-1m \\
        --work /tmp/splip-1m-work --phases kill --out benchmarks/results/embed_1m_kill.json

Phases:
- bare: decoding alone (the job's DecodePool over `--sample-shards` shards, 1 worker and one per
  core) and the encoder alone (`embed_pixels` on those decoded pixels, ORT with 1 thread and with
  one per core), and the bound for any schedule of both on these cores, 1 / (1/decode + 1/encode).
- configs: the job on the sample shards with 1 / one-per-core decode workers x 1 / one-per-core
  encoder threads, to choose how the cores are split.
- job: the CLI over every shard, as a subprocess: wall time, img/s, the CLI's phase times, peak
  RSS of the job process and peak PSS of it with its decode workers (sampled every 0.5 s).
- index: `splip-engine index` on that store (a subprocess: build time, peak RSS), then loading it
  as `serve` does (RSS after load, and after `path_of`) and search latency: a batch of 64
  queries and single queries (p50), exact flat and the built index, and recall@100 vs exact.
- kill: the job again into a new store, SIGKILLed once ~50% of the rows are committed, then
  re-run: resume time, units skipped, and every record exactly once.
The engine is the tiny SpLIP (32 px, D = 64, random weights) unless `--clip-model` / `--engine`
say otherwise; the ViT-B-32 run (on 5 of the 10 shards: 10k images take ~12 min at 14 img/s on 2 cores):

    python benchmarks/shard_data.py --out /tmp/splip-10k --images 10000 --shards 10 --size 512
    mkdir /tmp/splip-5k && for i in 00000 00001 00002 00003 00004; do
        ln -s /tmp/splip-10k/$i.tar /tmp/splip-10k/${i}_stats.json /tmp/splip-5k/; done
    flock -x /tmp/splip-cpu.lock python benchmarks/bench_embed_job.py --shards /tmp/splip-5k \
        --work /tmp/splip-10k-work --clip-model ViT-B-32 --batch-size 32 --sample-shards 2 \
        --phases bare,job --out benchmarks/results/embed_vitb32_5k.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

CLI = [sys.executable, "-m", "splip_engine"]


def export_engine(clip_model: str, directory: Path) -> Path:
    """SpLIP on `clip_model` (random weights), exported once (fp32 ONNX) into `directory`."""
    if not (directory / "manifest.json").is_file():
        from splip_engine import SpLIPConfig, build_model
        from splip_engine.export import exporter

        model = build_model(SpLIPConfig(clip_model=clip_model, pretrained="")).eval()
        if not exporter.export_engines(model, directory):
            raise SystemExit(f"export of the {clip_model} engine into {directory} failed")
    return directory


def _proc_kib(pid: int, file: str, field: str) -> int:
    """A `field:  N kB` value of /proc/PID/FILE (Linux), 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/{file}") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return 0


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc/PID/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found + [g for c in found for g in _children(c)]


def rss_mib(pid: int | str = "self") -> float:
    return _proc_kib(pid, "status", "VmRSS") / 1024


class TreeMemory:
    """Samples a process and its children every `period` s: its peak RSS (the kernel's high-water
    mark, VmHWM, so no peak is missed between samples), its RSS over time, and the peak PSS (shared
    pages split between the processes sharing them) of the process with its children."""

    def __init__(self, pid: int, period: float = 0.5):
        self.pid, self.period = pid, period
        self.peak_rss = self.peak_tree_pss = 0.0
        self.samples: list[tuple[float, float]] = []  # (seconds, main RSS MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.perf_counter()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = rss_mib(self.pid)
            if not rss:
                break
            pss = sum(_proc_kib(p, "smaps_rollup", "Pss") for p in [self.pid, *_children(self.pid)]) / 1024
            hwm = _proc_kib(self.pid, "status", "VmHWM") / 1024
            self.peak_rss, self.peak_tree_pss = max(self.peak_rss, hwm), max(self.peak_tree_pss, pss)
            self.samples.append((time.perf_counter() - self._start, rss))
            self._stop.wait(self.period)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_rss_mib": self.peak_rss, "peak_tree_pss_mib": self.peak_tree_pss,
                "rss_mib_over_time": [(round(t, 1), round(r)) for t, r in self.samples[:: max(1, len(self.samples) // 40)]]}


def run_cli(args: list[str], kill_when=None, store: Path | None = None) -> dict:
    """Run `splip-engine ARGS`; returns wall time, memory and its stdout. `kill_when(store.json)`:
    SIGKILL it once that holds."""
    import tempfile

    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=stderr, text=True)
        memory = TreeMemory(proc.pid)
        killed = False
        try:
            while kill_when is not None and proc.poll() is None:
                try:
                    if kill_when(json.loads((store / "store.json").read_text())):
                        os.kill(proc.pid, signal.SIGKILL)
                        killed = True
                        break
                except (OSError, ValueError):
                    pass
                time.sleep(0.2)
            out, _ = proc.communicate()
        finally:
            if proc.poll() is None:
                proc.kill()
        stderr.seek(0)
        tail = stderr.read()[-2000:]
    result = {"wall_s": time.perf_counter() - start, "returncode": proc.returncode, "killed": killed,
              "stdout": out.strip().splitlines(), **memory.stop()}
    if proc.returncode != 0 and not killed:
        raise SystemExit(f"splip-engine {' '.join(args)} failed ({proc.returncode}):\n{out}\n{tail}")
    return result


def bare(shards: Path, engine: Path, sample: int, batch: int) -> dict:
    """Decoding alone and the encoder alone on these cores (see the module docstring)."""
    from splip_engine.runtime.inputs import open_input
    from splip_engine.runtime.loader import load_engine
    from splip_engine.runtime.ort_backend import OrtEncoder
    from splip_engine.runtime.pipeline import DecodePool, default_workers

    resolved = open_input(shards)
    units = list(resolved.units())[:sample]
    spec = load_engine(engine, backend="onnxruntime").spec
    out: dict = {"sample_shards": len(units)}
    pixels = []
    for workers in (1, default_workers()):
        pool = DecodePool(workers, resolved.options, "photo", spec, batch)
        start, count = time.perf_counter(), 0
        for decoded in pool.run(units if workers > 1 else units[: max(1, len(units) // 2)]):
            count += len(decoded.ids)
            if sum(map(len, pixels)) < 512:  # real photos for the encoder timing
                pixels.append(decoded.pixels)
        out[f"decode_{workers}_workers_img_per_s"] = count / (time.perf_counter() - start)
    sample_pixels = pool.decoder.normalise(np.concatenate(pixels), spec)  # (n, 3, S, S) float32 of real photos
    manifest = json.loads((engine / "manifest.json").read_text())
    for threads in (1, 0):
        encoder = OrtEncoder(engine, manifest, batch_size=batch, threads=threads)
        encoder.embed_pixels(sample_pixels[:batch], "photo")
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < 20:
            encoder.embed_pixels(sample_pixels, "photo")
            count += len(sample_pixels)
        out[f"encoder_{threads or 'all'}_threads_img_per_s"] = count / (time.perf_counter() - start)
    decode = out[f"decode_{default_workers()}_workers_img_per_s"]
    encode = max(out["encoder_1_threads_img_per_s"], out["encoder_all_threads_img_per_s"])
    out.update({"decode_img_per_s": decode, "encoder_img_per_s": encode, "slower_img_per_s": min(decode, encode),
                "shared_cores_bound_img_per_s": 1 / (1 / decode + 1 / encode)})
    return out


def configs(shards: Path, engine: Path, sample: int, batch: int) -> list[dict]:
    """The job (in this process, on `sample` shards) with 1 or one-per-core decode workers and 1
    or one-per-core encoder threads: which split of the cores goes fastest."""
    import tempfile

    from splip_engine.runtime.embed_job import run_embed
    from splip_engine.runtime.inputs import open_input
    from splip_engine.runtime.ort_backend import OrtEncoder
    from splip_engine.runtime.pipeline import default_workers

    manifest = json.loads((engine / "manifest.json").read_text())
    names = [Path(f).name for f in open_input(shards).files[:sample]]
    source = f"{shards}/{{{names[0][:-4]}..{names[-1][:-4]}}}.tar"
    rows = []
    for workers in sorted({1, default_workers()}):
        for threads in sorted({1, 0}):
            with tempfile.TemporaryDirectory(dir=shards.parent) as tmp, \
                    OrtEncoder(engine, manifest, batch_size=batch, threads=threads) as encoder:
                report = run_embed(encoder, source, Path(tmp) / "store", batch_size=batch, workers=workers,
                                   progress=False)
            rows.append({"workers": workers, "threads": threads or "all", "img_per_s": report.images_per_s,
                         "timings": report.timings})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def _queries(store_dir: Path, count: int, seed: int) -> np.ndarray:
    """(count, D) float32 unit queries: random store rows plus noise (photo-to-photo search)."""
    from splip_engine.index import open_store

    store = open_store(store_dir)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(store.count, count, replace=False))
    emb = np.concatenate([shard for shard in store.shard_arrays()])[rows].astype(np.float32)  # (count, D)
    queries = emb + rng.normal(0, 0.05, emb.shape).astype(np.float32)
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def index_and_search(store: Path, index_dir: Path, k: int = 100) -> dict:
    """`splip-engine index --kind ivfpq` tuned with --eval-queries (auto would pick exact flat at 1M x 64),
    then load + search as `serve` does, against exact flat."""
    shutil.rmtree(index_dir, ignore_errors=True)
    np.save(index_dir.parent / "eval_queries.npy", _queries(store, 128, seed=1))
    build = run_cli(["index", "--store", str(store), "--out", str(index_dir), "--kind", "ivfpq", "--eval-queries",
                     str(index_dir.parent / "eval_queries.npy"), "-k", str(k)])
    probe = subprocess.run([sys.executable, __file__, "--probe-index", str(index_dir), "--store", str(store),
                            "--k", str(k)], capture_output=True, text=True, check=True)
    return {"build": build, **json.loads(probe.stdout.strip().splitlines()[-1])}


def probe_index(index_dir: Path, store_dir: Path, k: int) -> dict:
    """In a fresh process: RSS after loading the index, after path_of, search latencies, recall@k
    vs exact search by ids and tie-aware (an approximate hit scoring at least the exact k-th counts)."""
    from splip_engine.index import GalleryIndex, open_store

    rss = rss_mib
    before = rss()
    start = time.perf_counter()
    index = GalleryIndex.load(index_dir)
    out = {"kind": index.kind, "count": index.count, "params": index.info["params"],
           "load_s": time.perf_counter() - start, "rss_before_load_mib": before, "rss_after_load_mib": rss()}
    start = time.perf_counter()
    paths = [index.path_of(i) for i in index.ids[::100_000]]
    out.update({"first_path_of_s": time.perf_counter() - start, "rss_after_path_of_mib": rss(), "path_example": paths[0]})
    queries = _queries(store_dir, 64 + 32, seed=2)  # other queries than the tuning ones
    start = time.perf_counter()
    exact = GalleryIndex.build_from_store(open_store(store_dir), "flat") if index.kind != "flat" else index
    out["exact_flat_build_s"] = time.perf_counter() - start
    found = {}
    for name, searched in (("exact_flat", exact), (index.kind, index)):
        searched.search(queries[:64], k)
        start = time.perf_counter()
        found[name] = searched.search(queries[:64], k)
        batch_ms = 1e3 * (time.perf_counter() - start)
        single = []
        for query in queries[64:]:
            t0 = time.perf_counter()
            searched.search(query[None], k)
            single.append(1e3 * (time.perf_counter() - t0))
        out[name] = {"batch64_ms": batch_ms, "single_p50_ms": float(np.median(single))}
    (exact_scores, exact_ids), (scores, ids) = found["exact_flat"], found[index.kind]
    out[f"recall_at_{k}"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact_ids, ids)]))
    out[f"tie_aware_recall_at_{k}"] = float(np.mean(scores >= exact_scores[:, -1:] - 1e-6))
    return out


def check_once(store_dir: Path, expected: int) -> dict:
    """Every record exactly once: the store's ids are unique and `expected` many."""
    from splip_engine.index import open_store

    store = open_store(store_dir)
    ids = store.column("id").to_pylist()
    return {"rows": len(ids), "unique_ids": len(set(ids)), "errors": len(store.errors()),
            "exactly_once": len(ids) == len(set(ids)) == expected, "units_done": sum(
                s == "done" for s in store.units.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=Path)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--engine", type=Path, help="an engine dir [default: --clip-model exported into --work]")
    parser.add_argument("--clip-model", default="tiny", help="model of the default engine (tiny, ViT-B-32)")
    parser.add_argument("--phases", default="bare,job,index,kill")
    parser.add_argument("--sample-shards", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--probe-index", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    if args.probe_index:
        print(json.dumps(probe_index(args.probe_index, args.store, args.k)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    engine = args.engine or export_engine(args.clip_model, args.work / f"engine-{args.clip_model}")
    results: dict = json.loads(args.out.read_text()) if args.out and args.out.is_file() else {}
    results.update({"shards": str(args.shards), "engine": str(engine), "cpu_count": os.cpu_count(),
                    "batch_size": args.batch_size})
    embed = ["embed", "--engine", str(engine), "--input", str(args.shards), "--batch-size", str(args.batch_size),
             "--backend", "onnxruntime", "--device", "cpu"]
    if args.workers is not None:
        embed += ["--workers", str(args.workers)]
    phases = args.phases.split(",")
    if "bare" in phases:
        results["bare"] = bare(args.shards, engine, args.sample_shards, args.batch_size)
        print(json.dumps({"bare": results["bare"]}), flush=True)
    if "configs" in phases:
        results["configs"] = configs(args.shards, engine, args.sample_shards, args.batch_size)
    store = args.work / "store"
    if "job" in phases:
        shutil.rmtree(store, ignore_errors=True)
        job = run_cli([*embed, "--out", str(store)])
        job["check"] = check_once(store, job_total(args.shards))
        job["img_per_s"] = job["check"]["rows"] / job["wall_s"]
        results["job"] = job
        if "bare" in results:
            job["vs_slower_of_bare"] = job["img_per_s"] / results["bare"]["slower_img_per_s"]
            job["vs_shared_cores_bound"] = job["img_per_s"] / results["bare"]["shared_cores_bound_img_per_s"]
        print(json.dumps({"job": {k: v for k, v in job.items() if k != "rss_mib_over_time"}}), flush=True)
    if "index" in phases:
        results["index"] = index_and_search(store, args.work / "index")
        print(json.dumps({"index": results["index"]}), flush=True)
    if "kill" in phases:
        killed_store = args.work / "store-killed"
        shutil.rmtree(killed_store, ignore_errors=True)
        total = job_total(args.shards)
        first = run_cli([*embed, "--out", str(killed_store)], store=killed_store,
                        kill_when=lambda info: info["counts"]["rows"] >= total // 2)
        after_kill = check_once(killed_store, total)
        resumed = run_cli([*embed, "--out", str(killed_store)])
        results["kill"] = {"killed_run": first, "after_kill": after_kill, "resumed_run": resumed,
                           "final": check_once(killed_store, total)}
        print(json.dumps({"kill": {k: {kk: vv for kk, vv in v.items() if kk != "rss_mib_over_time"}
                                   for k, v in results["kill"].items()}}), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))


def job_total(shards: Path) -> int:
    """Records in the shards (from img2dataset's stats files)."""
    from splip_engine.runtime.inputs import open_input

    return open_input(shards).count()


if __name__ == "__main__":
    main()
