"""The GPU suite on a lent machine that reaches no package registry: wheels carried with the
working tree, installed there without network, then the suite.

Here (a machine with PyPI), once per change of the project:

    python benchmarks/gpu_bootstrap.py prepare            # -> .gpu-carry/ (git-ignored, <= 48 MiB)

writes the cp312 manylinux x86_64 wheels of what the GPU image lacks (open_clip_torch and the
modules its import needs, braceexpand, faiss-cpu: CARRIED, at the versions installed here) and
this project as a wheel, with carry.json listing each file, its size and sha256.

There (the working tree and .gpu-carry travel with the call):

    python benchmarks/gpu_bootstrap.py run --target /tmp/splip-site -- --out "$OUT/gpu_suite.json" --budget-s 540

installs every wheel of .gpu-carry with `pip install --no-index --no-deps --target` (unzipped
when the image has no pip), checks that `splip_engine`, `splip_engine.export` and
`splip_engine.kernels` import from the target, prints what does not import, and starts
benchmarks/gpu_suite.py with the target first on PYTHONPATH; its exit code is the suite's.
(`export/` and `kernels/` are mapped into `splip_engine.*` by setuptools' package-dir: only the
installed wheel has them there, so PYTHONPATH=. is not enough.)

    python benchmarks/gpu_bootstrap.py install --wheels DIR --target DIR   # the install step alone
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CARRY_DIR = REPO / ".gpu-carry"
MAX_CARRY_MIB = 48
CARRIED = ("open_clip_torch", "ftfy", "wcwidth", "regex", "braceexpand", "faiss-cpu")
"""What the GPU image (Python 3.12, torch, triton, torchvision, onnx, CPU onnxruntime, numpy,
pillow, pyarrow, safetensors, click, tqdm, pytest, packaging) lacks and the suite imports:
open_clip (which imports ftfy -> wcwidth, and regex; timm, huggingface_hub are optional to it),
braceexpand (shard patterns), faiss-cpu (the CPU side of the search stage). Not carried:
onnxscript (only the ONNX export needs it, and the image can run neither ORT CUDA nor TensorRT),
cairosvg / defusedxml (SVG input, unused by the suite)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
IMPORT_CHECK = ("splip_engine", "splip_engine.export", "splip_engine.kernels", "open_clip", "faiss", "braceexpand")


def installed_version(distribution: str) -> str | None:
    """The version installed here (what the tests ran with), or None."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


SOURCES = ("pyproject.toml", "README.md", "splip_engine", "export", "kernels")
"""What the wheel is built from (pyproject.toml's package-dir and readme)."""


def build_project_wheel(dest: Path) -> Path:
    """This project as a wheel in `dest`, built offline (no build isolation: setuptools from here)
    from a copy of its sources, so that setuptools' build/ and egg-info never land in the repo."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="splip-wheel-") as build:
        source = Path(build) / "src"
        for name in SOURCES:
            origin = REPO / name
            if origin.is_dir():
                shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                source.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, source / name)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "-w", build, str(source)], check=True)
        (wheel,) = Path(build).glob("splip_engine-*.whl")
        target = dest / wheel.name
        shutil.move(str(wheel), target)
    return target


def prepare(dest: Path, python_version: str, platforms: tuple[str, ...], max_mib: float) -> dict:
    """Fill `dest` (emptied first) with the carried wheels and the project's; refuse over max_mib."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    pins = [f"{name}=={installed_version(name)}" if installed_version(name) else name for name in CARRIED]
    command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
               "--python-version", python_version, "--implementation", "cp", "-d", str(dest), *pins]
    for platform in platforms:
        command += ["--platform", platform]
    subprocess.run(command, check=True)
    build_project_wheel(dest)
    files = sorted(dest.glob("*.whl"))
    listing = {"python_version": python_version, "platforms": list(platforms),
               "files": [{"name": f.name, "bytes": f.stat().st_size, "sha256": _sha256(f)} for f in files]}
    listing["total_mib"] = round(sum(f["bytes"] for f in listing["files"]) / 2**20, 2)
    (dest / "carry.json").write_text(json.dumps(listing, indent=2) + "\n")
    if listing["total_mib"] > max_mib:
        raise SystemExit(f"error: {dest} holds {listing['total_mib']} MiB of wheels, over the {max_mib} MiB "
                         "a device call carries beside the working tree; drop a package from CARRIED")
    return listing


def install(wheels: Path, target: Path) -> list[str]:
    """Every wheel of `wheels` into `target`, without network or dependency resolution: pip
    (--no-index --no-deps --target) when the interpreter has it, else unzipped (a wheel is a zip
    of its purelib / platlib tree). Returns the installed wheel names."""
    files = sorted(wheels.glob("*.whl"))
    if not files:
        raise SystemExit(f"error: no wheels in {wheels}: run `python benchmarks/gpu_bootstrap.py prepare` here "
                         "and carry the directory with the call")
    target.mkdir(parents=True, exist_ok=True)
    has_pip = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0
    if has_pip:
        env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--upgrade",
                        "--target", str(target), *map(str, files)], check=True, env=env)
    else:
        for wheel in files:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(target)
    return [f.name for f in files]


def check_imports(target: Path, modules: tuple[str, ...] = IMPORT_CHECK) -> dict[str, str]:
    """module -> the file it imports from with `target` first on the path, or "error: ..."
    (run in a fresh interpreter, outside the repo, so the working tree's splip_engine/ cannot
    stand in for the installed one)."""
    code = ("import importlib, json, sys\nout = {}\nfor name in sys.argv[1:]:\n"
            "    try:\n        out[name] = importlib.import_module(name).__file__\n"
            "    except Exception as exc:\n        out[name] = f'error: {type(exc).__name__}: {exc}'\n"
            "print(json.dumps(out))\n")
    done = subprocess.run([sys.executable, "-c", code, *modules], capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), env=_env(target))
    if done.returncode != 0:
        return {name: f"error: the check itself failed: {done.stderr.strip()[-300:]}" for name in modules}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _env(target: Path) -> dict[str, str]:
    """os.environ with `target` first on PYTHONPATH."""
    rest = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(target), rest) if p)}


def run(wheels: Path, target: Path, suite_args: list[str]) -> int:
    """install, check_imports, then the suite (its exit code); every step says what it did, flushed."""
    names = install(wheels, target)
    print(f"gpu_bootstrap: installed {len(names)} wheels into {target}: {', '.join(names)}", flush=True)
    for module, where in check_imports(target).items():
        print(f"gpu_bootstrap: import {module}: {where}", flush=True)
    command = [sys.executable, "-u", str(REPO / "benchmarks" / "gpu_suite.py"), *suite_args]
    print(f"gpu_bootstrap: {' '.join(command)}", flush=True)
    return subprocess.run(command, env=_env(target), cwd=REPO).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="here: fill the carry dir with wheels for the GPU image",
                               description="example: python benchmarks/gpu_bootstrap.py prepare --dest .gpu-carry")
    prep.add_argument("--dest", type=Path, default=CARRY_DIR, help="the carry dir (default .gpu-carry, git-ignored)")
    prep.add_argument("--python-version", default="3.12", help="the GPU image's Python (default 3.12)")
    prep.add_argument("--platform", action="append", dest="platforms", default=None,
                      help=f"wheel platform tags accepted (repeatable; default {', '.join(PLATFORMS)})")
    prep.add_argument("--max-mib", type=float, default=MAX_CARRY_MIB, help="refuse a bigger carry dir (default 48)")
    for name, text in (("install", "there: install the carried wheels into a target dir"),
                       ("run", "there: install, check the imports, run the suite (args after --)")):
        sub = commands.add_parser(name, help=text, description=f"example: python benchmarks/gpu_bootstrap.py {name} "
                                  "--target /tmp/splip-site" + (" -- --out gpu_suite.json --budget-s 540"
                                                                if name == "run" else ""))
        sub.add_argument("--wheels", type=Path, default=CARRY_DIR, help="the carried wheels (default .gpu-carry)")
        sub.add_argument("--target", type=Path, default=Path(tempfile.gettempdir()) / "splip-site",
                         help="where they are installed (default $TMPDIR/splip-site)")
        if name == "run":
            sub.add_argument("suite_args", nargs=argparse.REMAINDER, help="-- then benchmarks/gpu_suite.py's arguments")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        listing = prepare(args.dest, args.python_version, tuple(args.platforms or PLATFORMS), args.max_mib)
        for entry in listing["files"]:
            print(f"{entry['bytes'] / 2**20:8.2f} MiB  {entry['name']}")
        print(f"{listing['total_mib']:8.2f} MiB  in {args.dest} (limit {args.max_mib} MiB)")
        return 0
    if args.command == "install":
        names = install(args.wheels, args.target)
        print(f"installed {len(names)} wheels into {args.target}")
        broken = {m: w for m, w in check_imports(args.target).items() if w.startswith("error")}
        for module, why in broken.items():
            print(f"import {module}: {why}")
        return 1 if broken else 0
    suite_args = args.suite_args[1:] if args.suite_args[:1] == ["--"] else args.suite_args
    return run(args.wheels, args.target, suite_args)


if __name__ == "__main__":
    sys.exit(main())
