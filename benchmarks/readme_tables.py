"""The README's measured tables, generated from results JSON that cannot go stale silently.

Each table has a region in README.md between `<!-- table:NAME -->` and `<!-- /table:NAME -->`,
rendered from `benchmarks/results/NAME.json`. That JSON records what measured it (commit, machine:
CPU model and flags, command, time) and the sha256 of every file on the table's *measured path*
(TABLES[NAME].path: the code that can change its numbers). `check` recomputes those hashes and
names every file that changed, appeared or vanished since: tests/test_readme_tables.py runs it (and
the README comparison) in the default test run, so CI fails until the table is measured again.

    python benchmarks/readme_tables.py --check                    # stale tables? README == JSON?
    python benchmarks/readme_tables.py --measure demo             # re-run the demo (under the CPU lock) -> JSON -> README
    python benchmarks/readme_tables.py --update demo --from DIR/report.json --command "..."   # ingest a finished run
    python benchmarks/readme_tables.py --update ablation --from DIR/ablation.json --command "..."
    python benchmarks/readme_tables.py --render                   # rewrite the README regions from the JSON
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"

_DATA = ["splip_engine/data/" + f for f in ("images.py", "transforms.py", "mini.py", "folder.py", "datasets.py",
                                            "sampler.py", "splits.py", "classnames.py", "pairs.py", "layouts.py")]
_TRAINING = ["splip_engine/model/**/*", "splip_engine/config.py", "splip_engine/losses.py", "splip_engine/train.py",
             "splip_engine/pretrain.py", "splip_engine/checkpoint.py", "splip_engine/cpu_threads.py",
             "splip_engine/evaluation.py", "splip_engine/protocol.py", "splip_engine/summary.py", *_DATA,
             "splip_engine/runtime/base.py", "splip_engine/runtime/torch_backend.py",
             "splip_engine/runtime/pipeline.py", "splip_engine/runtime/inputs.py"]


@dataclass(frozen=True)
class Table:
    """A README table: its measured path (globs relative to the repo root), its renderer, and the
    command that measures it again."""

    path: tuple[str, ...]
    render: Callable[[dict[str, Any]], str]
    measure: str


def _pct(value: float, spread: float | None = None) -> str:
    return f"{100 * value:.1f}" + (f" ± {100 * spread:.1f}" if spread is not None else "")


def _provenance(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (f"Measured at commit `{result['commit'][:10]}`{' (+ local changes)' if result.get('dirty') else ''} on "
            f"{m['cpu']} ({m['cores']} cores; {', '.join(m['flags']) or 'no AVX-512'}), {result['measured_at'][:10]}: "
            f"`{result['command']}`.")


def render_demo(result: dict[str, Any]) -> str:
    """The demo's table (mean ± spread over its training seeds) and its per-seed and stage lines."""
    report = result["data"]
    metrics, spread = report["metrics"], report["spread"]
    plain, untrained = "CLIP, no prompts (torch)", "SpLIP untrained (torch)"
    trained = next(k for k in metrics if k.startswith("SpLIP trained"))
    labels = {plain: "tiny CLIP, no prompts", untrained: "SpLIP untrained (random mapping blocks)",
              trained: f"SpLIP trained, {report['config']['epochs']} epochs, {trained.split('(')[1].rstrip(')')}"}
    rows = ["| model | ZS mAP@all | ZS P@100 | GZS mAP@all | GZS P@100 | FG Acc@1 / @5 |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for model in (plain, untrained, trained):
        values, sd = metrics[model], (None if model == plain else spread[model])
        cell = (lambda mode, key: _pct(values[mode][key], None if sd is None else sd[mode][key]))
        bold = (lambda text: f"**{text}**") if model == trained else (lambda text: text)
        rows.append(f"| {labels[model]} | {bold(cell('zs', 'map_all'))} | {bold(cell('zs', 'prec_100'))} | "
                    f"{bold(cell('gzs', 'map_all'))} | {bold(cell('gzs', 'prec_100'))} | "
                    f"{cell('fg', 'acc_1')} / {cell('fg', 'acc_5')} |")
    seeds = sorted(report["per_seed"], key=int)
    per_seed = ", ".join(_pct(report["per_seed"][s][trained]["zs"]["map_all"]) for s in seeds)
    gain = metrics[trained]["zs"]["map_all"] - metrics[plain]["zs"]["map_all"]
    gzs_gain = metrics[trained]["gzs"]["map_all"] - metrics[plain]["gzs"]["map_all"]
    stages = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in report["seconds"].items())
    return "\n".join(rows) + (
        f"\n\nIn %, mean ± sample std over training seeds {', '.join(seeds)}. Trained SpLIP, ZS mAP@all per seed: "
        f"{per_seed} (plain CLIP {_pct(metrics[plain]['zs']['map_all'])}): +{100 * gain:.1f} points ZS, "
        f"+{100 * gzs_gain:.1f} GZS. Wall {result['wall_s'] or sum(report['seconds'].values()):.0f} s; per stage: {stages}. " + _provenance(result))


def render_ablation(result: dict[str, Any]) -> str:
    """The ablation table exactly as `splip-engine ablate` writes it, and where it was measured."""
    sys.path.insert(0, str(ROOT))
    from splip_engine.ablation import AblationReport

    return AblationReport(**result["data"]).markdown().rstrip("\n") + "\n\n" + _provenance(result)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def render_bt(result: dict[str, Any]) -> str:
    """What B_t carries, per LayerNorm regime (means over the checkpoints diagnosed), from
    `splip-engine diagnose` outputs: {"runs": {regime: {seed: stats}}, "init": stats}."""
    rows = ["| LayerNorms | checkpoints | T spread, sketch / photo | abs(T) / word emb. | "
            "W_l change, sketch / photo | V_ms,l change, sketch / photo | ZS mAP@all: own T / modality-mean T / "
            "data-set-mean T | grad norm B_t / B_v / B_vt / LN (vision) | grad at T, per image |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    groups = [(regime, list(runs.values())) for regime, runs in result["data"]["runs"].items()]
    groups.append(("untrained (init)", [result["data"]["init"]]))
    for regime, runs in groups:
        avg = (lambda get: _mean([get(r) for r in runs]))
        pair = (lambda get, fmt="{:.2f}": " / ".join(fmt.format(avg(lambda r: get(r, m))) for m in ("sketch", "photo")))
        change = (lambda key: pair(lambda r, m: _mean(r["replaced_by"]["modality mean"][m][key]), "{:.3f}"))
        zs = " / ".join(_pct(avg(lambda r: r["retrieval"][k]["zs_map_all"])) if all("retrieval" in r for r in runs)
                        else "-" for k in ("T per image", "T = modality mean", "T = data-set mean"))
        grads = " / ".join(f"{avg(lambda r: r['gradient_norms'][k]):.3f}"
                           for k in ("B_t", "B_v", "B_vt", "LayerNorms (vision)"))
        rows.append(f"| {regime} | {len(runs)} | {pair(lambda r, m: r['rel_spread'][m]['T'])} | "
                    f"{avg(lambda r: r['T_norm_per_token'] / r['word_embedding_norm_per_token']):.1f} | "
                    f"{change('W_l')} | {change('V_ms_l')} | {zs} | {grads} | "
                    f"{avg(lambda r: r['gradient_norms']['T (per image)']):.1e} |")
    return "\n".join(rows) + "\n\n" + _provenance(result)


def render_macs(result: dict[str, Any]) -> str:
    """MACs per image and parameter counts per encoder, as benchmarks/count_macs.py counts them."""
    rows = ["| encoder | GMACs/image | params total | params trainable |", "| --- | ---: | ---: | ---: |"]
    rows += [f"| {name} | {r['gmacs_per_image']:.3f} | {r['total']:,} | {r['trainable']:,} |"
             for name, r in result["data"]["rows"].items()]
    return "\n".join(rows) + "\n\n" + _provenance(result)


_DEMO_MEASURE = "flock /tmp/splip-cpu.lock splip-engine demo --out {out}"
TABLES: dict[str, Table] = {
    "demo": Table(
        path=(*_TRAINING, "splip_engine/demo.py", "splip_engine/ort_session.py", "splip_engine/runtime/loader.py",
              "splip_engine/runtime/ort_backend.py", "export/exporter.py", "export/graph.py", "export/precision.py",
              "export/parity.py", "export/manifest.py", "export/validate.py"),
        render=render_demo, measure=_DEMO_MEASURE),
    "ablation": Table(
        path=(*_TRAINING, "splip_engine/ablation.py"), render=render_ablation,
        measure="splip-engine demo --out DEMO && nice -n 10 splip-engine ablate --data-root DEMO/data --clip-model tiny "
                "--pretrained DEMO/tiny_clip.pt --epochs 24 --lr 1e-2 --lr-layernorm 3e-2 --alpha 0.1 --beta 0 "
                "--fixed-margin --workers 1 --seeds 0,1,2 --layernorm both --out OUT (then --update ablation --from "
                "OUT/ablation.json)"),
    "macs": Table(
        path=("benchmarks/count_macs.py", "splip_engine/model/**/*", "splip_engine/config.py",
              "splip_engine/data/splits/seen_sketchy.txt"),
        render=render_macs, measure="python benchmarks/count_macs.py --clip-model ViT-B-32 --out M.json "
                                    "(then --update macs --from M.json)"),
    "bt": Table(
        path=(*_TRAINING, "splip_engine/ablation.py", "splip_engine/diagnose.py"), render=render_bt,
        measure="splip-engine diagnose --model CHECKPOINT --data-root DEMO/data --out D.json, per checkpoint of the "
                "ablation's base row (both regimes) and --at-init; then --update bt --from a JSON "
                '{"runs": {regime: {seed: D}}, "init": D}'),
}
"""Every generated README table. A table's path lists the code its numbers depend on (not CLI
plumbing): a change there makes its JSON stale."""


def path_files(table: Table, root: Path = ROOT) -> list[str]:
    """The files (relative, sorted) that `table.path`'s globs match under `root`, caches left out."""
    files = {p for pattern in table.path for p in root.glob(pattern) if p.is_file() and "__pycache__" not in p.parts}
    return sorted(p.relative_to(root).as_posix() for p in files)


def hash_files(files: list[str], root: Path = ROOT) -> dict[str, str]:
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files}


def stale_files(name: str, result: dict[str, Any], root: Path = ROOT) -> list[str]:
    """Files on table `name`'s measured path that changed, appeared or vanished since `result` was
    measured, each with what happened (empty: the table is current)."""
    recorded: dict[str, str] = result["path_sha256"]
    now = hash_files(path_files(TABLES[name], root), root)
    changed = [f"{f} (changed)" for f in sorted(set(now) & set(recorded)) if now[f] != recorded[f]]
    return changed + [f"{f} (new)" for f in sorted(set(now) - set(recorded))] + \
        [f"{f} (removed)" for f in sorted(set(recorded) - set(now))]


def machine() -> dict[str, Any]:
    """CPU model, core count and the SIMD flags that change speed (and low-precision numerics)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = re.search(r"model name\s*:\s*(.*)", info).group(1).strip()
        flags = set(re.search(r"flags\s*:\s*(.*)", info).group(1).split())
    except (OSError, AttributeError):
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return {"cpu": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags]}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def record(name: str, data: dict[str, Any], command: str, wall_s: float | None = None,
           commit: str = "HEAD", measured_at: float | None = None) -> dict[str, Any]:
    """Write benchmarks/results/NAME.json: `data` with the commit that measured it, the machine, the
    command and the hashes of the table's measured path as the working tree holds it now. With an
    earlier `commit`, every file on the path must be as that commit has it (else SystemExit)."""
    files = path_files(TABLES[name])
    commit = _git("rev-parse", commit)
    if commit != _git("rev-parse", "HEAD"):
        differ = _git("diff", "--name-only", commit, "--", *TABLES[name].path)
        if differ:
            raise SystemExit(f"the {name} table's measured path changed since {commit[:10]}: {differ.split()}; "
                             "measure it again")
    dirty = bool(_git("status", "--porcelain", "--", *files))
    result = {"table": name, "commit": commit, "dirty": dirty, "machine": machine(),
              "command": command, "measured_at": datetime.datetime.fromtimestamp(measured_at or time.time(), datetime.timezone.utc
                                                             ).isoformat(timespec="seconds"),
              "wall_s": wall_s, "path": list(TABLES[name].path), "path_sha256": hash_files(files), "data": data}
    target = RESULTS / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, target)
    return result


def load(name: str, results: Path = RESULTS) -> dict[str, Any]:
    return json.loads((results / f"{name}.json").read_text())


def _region(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- table:{re.escape(name)} -->\n)(.*?)\n?(<!-- /table:{re.escape(name)} -->)", re.S)


def readme_region(name: str, text: str) -> str | None:
    """The README text between table `name`'s markers, or None when it has none."""
    match = _region(name).search(text)
    return match.group(2) if match else None


def render_readme(text: str, results: Path = RESULTS) -> str:
    """`text` with every table region replaced by its rendering from its JSON."""
    for name, table in TABLES.items():
        if readme_region(name, text) is not None and (results / f"{name}.json").is_file():
            text = _region(name).sub(lambda m: f"{m.group(1)}{table.render(load(name, results))}\n{m.group(3)}", text)
    return text


def check(root: Path = ROOT) -> list[str]:
    """Problems: a table region missing, a README region that differs from its JSON, stale files."""
    text = (root / "README.md").read_text()
    problems = []
    for name, table in TABLES.items():
        region = readme_region(name, text)
        if region is None:
            problems.append(f"README.md has no <!-- table:{name} --> region")
            continue
        if not (root / "benchmarks" / "results" / f"{name}.json").is_file():
            problems.append(f"benchmarks/results/{name}.json is missing: measure the {name} table")
            continue
        result = load(name, root / "benchmarks" / "results")
        if region != table.render(result):
            problems.append(f"README.md's {name} table differs from benchmarks/results/{name}.json: "
                            f"run `python benchmarks/readme_tables.py --render`")
        stale = stale_files(name, result, root)
        if stale:
            problems.append(f"the {name} table is stale: code on its measured path changed since "
                            f"benchmarks/results/{name}.json was measured: {', '.join(stale)}; measure it again: "
                            + ("python benchmarks/readme_tables.py --measure demo" if name == "demo" else table.measure))
    return problems


def measure_demo() -> dict[str, Any]:
    """Run the demo under the CPU lock (alone: its stage times are reported) and record it."""
    out = Path(tempfile.mkdtemp(prefix="splip-demo-")) / "demo"
    argv = shlex.split(_DEMO_MEASURE.format(out=out))
    exe = str(Path(sys.executable).parent / "splip-engine")
    argv[argv.index("splip-engine")] = exe if Path(exe).exists() else "splip-engine"
    before = hash_files(path_files(TABLES["demo"]))
    start = time.perf_counter()
    subprocess.run(argv, check=True)
    wall = time.perf_counter() - start
    if hash_files(path_files(TABLES["demo"])) != before:
        raise SystemExit("code on the demo's measured path changed while it ran: measure again")
    return record("demo", json.loads((out / "report.json").read_text()), _DEMO_MEASURE.format(out="DIR"), wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail (exit 1) on a stale table or a README != JSON")
    parser.add_argument("--render", action="store_true", help="rewrite the README's regions from their JSON")
    parser.add_argument("--measure", choices=["demo"], help="measure a table again, record it, render the README")
    parser.add_argument("--update", choices=sorted(TABLES), help="record a finished run's output (--from) as TABLE")
    parser.add_argument("--from", dest="source", type=Path, help="with --update: report.json / ablation.json")
    parser.add_argument("--command", default="", help="with --update: the command that produced --from")
    parser.add_argument("--wall-s", type=float, default=None, help="with --update: the run's wall time")
    parser.add_argument("--commit", default="HEAD", help="with --update: the commit the run measured (its path must "
                                                         "be unchanged since)")
    args = parser.parse_args(argv)
    if args.measure:
        measure_demo()
    if args.update:
        if not args.source or not args.command:
            parser.error("--update needs --from FILE and --command '...'")
        record(args.update, json.loads(args.source.read_text()), args.command, args.wall_s, args.commit,
               args.source.stat().st_mtime)
    if args.measure or args.update or args.render:
        README.write_text(render_readme(README.read_text()))
        print("README.md tables rendered from", ", ".join(f"benchmarks/results/{n}.json" for n in TABLES))
    if args.check or not (args.measure or args.update or args.render):
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
