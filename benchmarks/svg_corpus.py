"""Real-world SVGs: how many files the engine fails to render against librsvg (`rsvg-convert`) on
the same files (issue 20, item 3). Counts only, no timing: run it niced, without the CPU lock.

Corpus: Debian's `openclipart-svg` (apt-get install -y openclipart-svg librsvg2-bin; measurement
only, not CI). Run:
    nice -n 10 .venv/bin/python benchmarks/svg_corpus.py /usr/share/openclipart \
        --json benchmarks/results/svg_corpus.json
Symlinks to the same file count once. Each file goes through `load_image` (the render child, default decode budget) and through
`rsvg-convert -w 512` (its own defaults, 60 s per file); a file "fails" when no image comes out.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

RSVG_TIMEOUT_S = 60


def ours(path: Path) -> str | None:
    """None if the engine renders `path`, else its error."""
    from splip_engine.data.images import load_image
    from splip_engine.errors import SpLIPError

    try:
        load_image(path)
        return None
    except SpLIPError as e:
        return str(e)


def librsvg(path: Path) -> str | None:
    """None if rsvg-convert renders `path`, else what it said."""
    try:
        proc = subprocess.run(["rsvg-convert", "-w", "512", str(path)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=RSVG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {RSVG_TIMEOUT_S} s"
    return None if proc.returncode == 0 else (proc.stderr.decode("utf-8", "replace").strip()[:300] or f"exit {proc.returncode}")


def facts() -> dict:
    """The machine and the code measured."""
    from splip_engine.runtime.cpu_features import read_cpu_features

    features = read_cpu_features()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False).stdout.strip()
    rsvg = subprocess.run(["rsvg-convert", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"cpu": features.model, "cpu_flags": list(features.flags), "git_commit": commit, "python": platform.python_version(), "librsvg": rsvg}


def both(path: Path) -> tuple[str | None, str | None]:
    return ours(path), librsvg(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--sample", type=int, default=None,
                        help="Only N files, drawn at random (seed 0) from the sorted unique files (symlinks count once).")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    files = sorted({path.resolve() for path in args.corpus.rglob("*.svg") if path.is_file()})
    random.Random(0).shuffle(files)  # a partial run (the JSON is written every 100 files) is a random sample too
    files = files[: args.sample]
    start, done = time.monotonic(), []
    with ThreadPoolExecutor(args.threads) as pool:
        for path, outcome in zip(files, pool.map(both, files)):
            done.append((path, outcome))
            if len(done) % 100 == 0 or len(done) == len(files):
                result = summary(done, time.monotonic() - start, len(files))
                if args.json:
                    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_errors")}, indent=2))


def summary(done: list, seconds: float, planned: int) -> dict:
    """The counts and failures of the files done so far."""
    failed_ours = {str(f): e for f, (e, _) in done if e is not None}
    failed_rsvg = {str(f): e for f, (_, e) in done if e is not None}
    reasons = Counter(e.split(": ", 1)[-1].split(" (")[0][:80] for e in failed_ours.values())
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]), **facts(), "files": len(done),
        "files_planned": planned, "failed_engine": len(failed_ours), "failed_librsvg": len(failed_rsvg),
        "failed_engine_only": sorted(set(failed_ours) - set(failed_rsvg)),
        "failed_librsvg_only": sorted(set(failed_rsvg) - set(failed_ours)),
        "engine_errors": failed_ours, "librsvg_errors": failed_rsvg,
        "engine_error_kinds": dict(reasons.most_common()), "seconds": round(seconds, 1),
    }


if __name__ == "__main__":
    main()
