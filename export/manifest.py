"""The engine dir's manifest.json: what was exported, how, and a sha256 of every file.

Written last and atomically by export; read and checked by the runtime (`read_manifest`,
`verify_files`), which refuses a manifest of a newer format or a file that does not match.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from splip_engine.errors import SpLIPError
from splip_engine.io_utils import write_text_atomic

MANIFEST_FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_file(engine_dir: Path, relative: str, file_format: str, modality: str | None = None) -> dict[str, Any]:
    """The manifest["files"] entry of one written file: sha256, bytes, format (+ modality)."""
    path = engine_dir / relative
    entry: dict[str, Any] = {"sha256": sha256_file(path), "bytes": path.stat().st_size, "format": file_format}
    if modality:
        entry["modality"] = modality
    return entry


def engine_hash(files: dict[str, dict[str, Any]]) -> str:
    """sha256 over the sorted `path:sha256` lines: one id for the whole engine."""
    lines = "".join(f"{path}:{entry['sha256']}\n" for path, entry in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def write_manifest(engine_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """Write `manifest` (with its engine_hash filled in) as engine_dir/manifest.json, atomically."""
    path = Path(engine_dir) / MANIFEST_FILE
    manifest = {**manifest, "engine_hash": engine_hash(manifest["files"])}
    write_text_atomic(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return path


def read_manifest(engine_dir: str | Path) -> dict[str, Any]:
    """Load and validate engine_dir/manifest.json; SpLIPError naming the problem and the fix."""
    engine_dir = Path(engine_dir)
    if not engine_dir.is_dir():
        raise SpLIPError(f"engine dir {engine_dir} does not exist; write one with `splip-engine export`")
    path = engine_dir / MANIFEST_FILE
    if not path.is_file():
        raise SpLIPError(f"{engine_dir} has no {MANIFEST_FILE}: not an engine dir (write one with `splip-engine export`)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpLIPError(f"{path} is not valid JSON ({e}); re-export the engine with `splip-engine export`") from e
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise SpLIPError(f"{path} has no integer format_version; re-export the engine with `splip-engine export`")
    if version > MANIFEST_FORMAT_VERSION:
        raise SpLIPError(
            f"{path} was written by a newer splip-engine (format {version} > {MANIFEST_FORMAT_VERSION}): "
            "upgrade splip-engine (pip install -U splip-engine) to load it"
        )
    if not isinstance(manifest.get("files"), dict):
        raise SpLIPError(f"{path} lists no files; re-export the engine with `splip-engine export`")
    return manifest


def verify_files(engine_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Check every file in manifest["files"] exists with its recorded sha256; SpLIPError naming
    the first file that is missing or altered."""
    engine_dir = Path(engine_dir)
    for relative, entry in sorted(manifest["files"].items()):
        path = engine_dir / relative
        if not path.is_file():
            raise SpLIPError(f"engine file {path} listed in {MANIFEST_FILE} is missing; re-export the engine")
        actual = sha256_file(path)
        if actual != entry["sha256"]:
            raise SpLIPError(
                f"engine file {path} does not match its sha256 in {MANIFEST_FILE} "
                f"({actual[:12]}... != {entry['sha256'][:12]}...): it was modified or damaged; re-export the engine"
            )
