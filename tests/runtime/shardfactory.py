"""Builders of the same photos as every input kind: a folder, webdataset tar shards (written by
webdataset's own TarWriter, as img2dataset does), an image-bytes parquet (img2dataset's
columns) and QuickDraw .ndjson lines."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def photo_jpegs(count: int, seed: int = 0, size: tuple[int, int] = (24, 64)) -> dict[str, bytes]:
    """{img2dataset key: JPEG bytes} of `count` random photos with sides in `size`."""
    rng = np.random.default_rng(seed)
    photos = {}
    for i in range(count):
        height, width = (int(v) for v in rng.integers(*size, size=2))
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
        photos[f"{i:09d}"] = buffer.getvalue()
    return photos


def caption(key: str) -> str:
    return f"a photo number {int(key)}"


def side_json(key: str) -> str:
    return json.dumps({"key": key, "url": f"https://example.com/{key}.jpg", "status": "success"})


def write_folder(root: Path, photos: dict[str, bytes]) -> Path:
    """One `<key>.jpg` per photo under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    for key, data in photos.items():
        (root / f"{key}.jpg").write_bytes(data)
    return root


def write_shards(directory: Path, photos: dict[str, bytes], per_shard: int) -> list[Path]:
    """img2dataset-style shards `00000.tar`, ... with `<key>.jpg`, `.txt` and `.json` members."""
    import webdataset as wds

    directory.mkdir(parents=True, exist_ok=True)
    keys = list(photos)
    shards = []
    for number, start in enumerate(range(0, len(keys), per_shard)):
        shard = directory / f"{number:05d}.tar"
        with wds.TarWriter(str(shard)) as writer:
            for key in keys[start:start + per_shard]:
                writer.write({"__key__": key, "jpg": photos[key], "txt": caption(key), "json": side_json(key)})
        shards.append(shard)
    return shards


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A tar of exactly these (name, data) members, in order (for malformed shards)."""
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_bytes_parquet(path: Path, photos: dict[str, bytes], row_group_size: int = 1024) -> Path:
    """img2dataset's parquet output: key, url, caption, status and the jpg bytes."""
    keys = list(photos)
    table = pa.table({"key": keys, "url": [f"https://example.com/{k}.jpg" for k in keys],
                      "caption": [caption(k) for k in keys], "status": ["success"] * len(keys),
                      "jpg": pa.array([photos[k] for k in keys], pa.binary())})
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def quickdraw_line(key_id: str, word: str = "cat") -> str:
    """One line of QuickDraw's simplified ndjson."""
    return json.dumps({"word": word, "countrycode": "US", "timestamp": "2017-03-01 00:00:00.0", "recognized": True,
                       "key_id": key_id, "drawing": [[[0, 50, 100], [0, 80, 10]], [[10, 90], [90, 10]]]})
