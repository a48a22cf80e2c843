"""Serving under render bombs (issue 20): p50 / p99 of ordinary queries to a real `splip-engine
serve` process, quiet and while several render bombs are in flight (each a marker of 2,000 circles
at 20,000 vertices: ~33 minutes of rendering unbounded, stopped by the 2 s decode budget).

Ordinary queries are 256 px PNG sketches (the drawing page sends PNG) and small SVG sketches, one
closed-loop client each; bombs are posted by --bombs clients in a loop (each answered 400 at the
budget). Tiny engine, random weights (speed does not depend on them), ONNX Runtime on CPU,
10,000-photo flat index. Target: p99 with bombs <= 2x quiet p99.
Run: nice .venv/bin/python benchmarks/bench_bombs.py --prepare   (export + index, untimed)
     flock /tmp/splip-cpu.lock .venv/bin/python benchmarks/bench_bombs.py --json benchmarks/results/bombs_cpu.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bench_serve import Server, auth, build_gallery, export_engine, sketch_png  # noqa: E402
from data.hostile_svgs import marker_bomb_svg  # noqa: E402
from data.imagefactory import strokes_svg  # noqa: E402
from svg_corpus import facts  # noqa: E402

K = 10


async def measure(url: str, queries: dict[str, bytes], bombs: int, seconds: float) -> dict:
    """p50 / p99 per ordinary query kind (one closed-loop client each) while `bombs` clients post bombs."""
    bomb = marker_bomb_svg()
    latencies: dict[str, list[float]] = {kind: [] for kind in queries}
    statuses: dict[str, dict[int, int]] = {kind: {} for kind in [*queries, "bomb"]}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=auth()) as http:
        async def client(kind: str, body: bytes, content_type: str, until: float, record: bool) -> None:
            while time.perf_counter() < until:
                start = time.perf_counter()
                response = await http.post(f"/search?k={K}", content=body, headers={"Content-Type": content_type})
                if record:
                    statuses[kind][response.status_code] = statuses[kind].get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        latencies[kind].append(time.perf_counter() - start)

        def ordinary(until: float, record: bool) -> list:
            return [client(kind, body, "image/svg+xml" if kind == "svg" else "image/png", until, record)
                    for kind, body in queries.items()]

        end = time.perf_counter() + 1.0 + seconds
        bombers = [asyncio.create_task(client("bomb", bomb, "image/svg+xml", end, True)) for _ in range(bombs)]
        if bombs:
            await asyncio.sleep(1.0)  # the bombs are rendering before the measured window
        await asyncio.gather(*ordinary(time.perf_counter() + 1.0, False))  # warm-up
        await asyncio.gather(*ordinary(time.perf_counter() + seconds, True))
        for task in bombers:
            task.cancel()
        await asyncio.gather(*bombers, return_exceptions=True)
    out = {"bombs_in_flight": bombs}
    for kind, values in latencies.items():
        ms = np.asarray(values) * 1000
        out[kind] = {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 1),
                     "p99_ms": round(float(np.percentile(ms, 99)), 1), "statuses": statuses[kind]}
    out["bomb_statuses"] = statuses["bomb"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/splip-bench-bombs"))
    parser.add_argument("--prepare", action="store_true", help="Only export the engine and build the index.")
    parser.add_argument("--bombs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    engine = export_engine("tiny", args.work / "tiny")
    index = args.work / "index"
    if not (index / "index.json").exists():
        build_gallery(engine, index)
    if args.prepare:
        return
    server = Server(engine, index, args.work)
    try:
        queries = {"png": sketch_png(), "svg": strokes_svg()}
        quiet = asyncio.run(measure(server.url, queries, 0, args.seconds))
        loaded = asyncio.run(measure(server.url, queries, args.bombs, args.seconds))
    finally:
        server.stop()
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), **facts(), "engine": "tiny (random weights)",
              "quiet": quiet, "with_bombs": loaded,
              "p99_ratio": {kind: round(loaded[kind]["p99_ms"] / quiet[kind]["p99_ms"], 2) for kind in queries}}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
