"""The demo on a busy machine: each code tree's `splip-engine demo` (small sizes), alone and beside
a CPU hog (another PyTorch job with its default threads), interleaved, per-stage seconds side by side.

Run it alone on the machine (the hog is part of the measurement):

    flock -x /tmp/splip-cpu.lock .venv/bin/python benchmarks/busy_machine.py \\
        --tree before=/tmp/splip-before --tree after=. --tree "after, 2 threads=." \\
        --tree-env "after, 2 threads:OMP_NUM_THREADS=2" \\
        --tree-args "after:--seeds 1" --tree-args "after, 2 threads:--seeds 1" \\
        --demo-args "--pretrain-steps 200 --epochs 1" --out benchmarks/busy_machine

A tree NAME=DIR puts DIR first on PYTHONPATH (a checkout whose `splip_engine` package holds
`export/` and `kernels/`, as an installed one does); --tree-env / --tree-args NAME:... give it extra
environment variables and demo arguments. Writes OUT.json and OUT.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOG = """
import torch
torch.set_num_threads(2)  # another job's default: one thread per core
a = torch.randn(384, 384)
while True:
    a = torch.tanh(a @ a)
"""


def run_demo(directory: Path, extra_env: dict[str, str], args: list[str], hog: bool) -> dict:
    """One `python -m splip_engine demo` from `directory`; its stage seconds and wall time."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONPATH": str(directory)} | extra_env
    hog_proc = subprocess.Popen([sys.executable, "-c", HOG]) if hog else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "splip_engine", "demo", "--out", f"{tmp}/demo", *args],
                                  env=env, cwd=tmp, capture_output=True, text=True, timeout=3000)
            wall = time.perf_counter() - start
            if proc.returncode:
                raise RuntimeError(f"demo from {directory} failed:\n{proc.stderr[-3000:]}")
            seconds = json.loads(Path(f"{tmp}/demo/report.json").read_text())["seconds"]
    finally:
        if hog_proc is not None:
            hog_proc.kill()
            hog_proc.wait()
    return {"wall": round(wall, 1), "stages": seconds}


def markdown(results: dict, cpu: str) -> str:
    stages = ["pretrain tiny CLIP", "train"]
    lines = [f"CPU: {cpu}, {os.cpu_count()} cores; hog: a 2-thread PyTorch matmul loop.", "",
             "| code | machine | " + " | ".join(f"{s} (s)" for s in stages) + " | whole demo (s) | busy / quiet |",
             "| --- | --- |" + " ---: |" * (len(stages) + 2)]
    for name, by_load in results.items():
        for load in ("quiet", "busy"):
            r = by_load[load]
            ratio = f"{r['wall'] / by_load['quiet']['wall']:.2f}x" if load == "busy" else ""
            cells = [str(r["stages"].get(s, "")) for s in stages]
            lines.append(f"| {name} | {load} | " + " | ".join(cells) + f" | {r['wall']} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="NAME=DIR")
    parser.add_argument("--tree-env", action="append", default=[], help="NAME:VAR=VALUE")
    parser.add_argument("--tree-args", action="append", default=[], help="NAME:demo arguments")
    parser.add_argument("--demo-args", default="--pretrain-steps 200 --epochs 1", help="Arguments for every demo.")
    parser.add_argument("--out", default="benchmarks/busy_machine")
    args = parser.parse_args()
    trees = {name: Path(directory).resolve() for name, _, directory in (t.partition("=") for t in args.tree)}
    envs: dict[str, dict[str, str]] = {name: {} for name in trees}
    for name, _, item in (e.partition(":") for e in args.tree_env):
        envs[name].update([item.split("=", 1)])
    extra = {name: [] for name in trees}
    for name, _, more in (a.partition(":") for a in args.tree_args):
        extra[name] += shlex.split(more)
    results: dict[str, dict] = {name: {} for name in trees}
    for load in ("quiet", "busy"):  # interleaved: each load level runs every tree back to back
        for name, directory in trees.items():
            demo_args = shlex.split(args.demo_args) + extra[name]
            results[name][load] = run_demo(directory, envs[name], demo_args, hog=load == "busy")
            print(name, load, results[name][load], flush=True)
    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"cpu": cpu, "results": results, "args": vars(args)}, indent=2))
    out.with_suffix(".md").write_text(markdown(results, cpu))
    print(markdown(results, cpu))


if __name__ == "__main__":
    main()
