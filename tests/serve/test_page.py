"""The page's routes on a real server on 127.0.0.1 (no browser: tests/serve/test_page_browser.py
drives the page): `/` and its files, open without the token; thumbnails by id from a folder, a tar
shard member and parquet image bytes, only for ids of the served index, with the token when auth
is on; and the page's strokes JSON gives the embedding of the same drawing uploaded as a file."""
from __future__ import annotations

import io
import json
import tarfile

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from splip_engine.data.strokes import parse_drawing_json, render_drawing
from splip_engine.index import GalleryIndex, open_store
from splip_engine.runtime.embed_job import run_embed
from splip_engine.serve import ServeSettings, create_app

from .helpers import reference_search, running_server

TOKEN = "page-token-0123456789abcdef"
DRAWING = {"drawing": [[[10, 60, 120, 200], [20, 90, 40, 180]], [[30, 30], [200, 40]], [[128], [128]]]}


def _embed_gallery(encoder, source, out, **kwargs) -> GalleryIndex:
    """The flat index of `source` embedded into the store `out`/store."""
    run_embed(encoder, source, out / "store", modality="photo", workers=0, progress=False, **kwargs)
    return GalleryIndex.build_from_store(open_store(out / "store"), kind="flat")


@pytest.fixture(scope="module")
def photos(mini) -> list:
    return sorted(mini.photo_root.rglob("*.jpg"))[:8]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Where `galleries` writes: <kind>/store is the store of each kind."""
    return tmp_path_factory.mktemp("page-galleries")


@pytest.fixture(scope="module")
def galleries(tiny_ort_encoder, mini, photos, root):
    """Three indexes of the same photos: from the folder, from a tar shard, from a parquet of bytes."""
    shards = root / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00007.tar", "w") as tar:
        for i, photo in enumerate(photos):
            tar.add(photo, arcname=f"k{i:03d}.jpg")
            caption = f"caption {i}".encode()
            info = tarfile.TarInfo(f"k{i:03d}.txt")
            info.size = len(caption)
            tar.addfile(info, io.BytesIO(caption))
    pq.write_table(pa.table({"key": [f"p{i:03d}" for i in range(len(photos))],
                             "jpg": [p.read_bytes() for p in photos]}), root / "part.parquet", row_group_size=3)
    return {"folder": _embed_gallery(tiny_ort_encoder, mini.photo_root, root / "folder"),
            "tar": _embed_gallery(tiny_ort_encoder, str(shards / "00007.tar"), root / "tar"),
            "parquet": _embed_gallery(tiny_ort_encoder, root / "part.parquet", root / "parquet")}


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _expected_thumbnail(photo) -> np.ndarray:
    image = Image.open(photo).convert("RGB")
    image.thumbnail((256, 256))
    return np.asarray(image, np.float32)


@pytest.mark.parametrize("kind", ["folder", "tar", "parquet"])
def test_thumbnails_of_gallery_ids_from_a_folder_a_tar_member_and_parquet_bytes(kind, galleries, photos,
                                                                                tiny_ort_encoder):
    index = galleries[kind]
    with running_server(create_app(tiny_ort_encoder, index, ServeSettings(max_wait_ms=1))) as url:
        for position in (0, 5):
            id_ = {"folder": str(photos[position].relative_to(photos[position].parents[1])),
                   "tar": f"00007/k{position:03d}", "parquet": f"p{position:03d}"}[kind]
            assert id_ in set(index.ids)
            response = httpx.get(f"{url}/thumbnail", params={"id": id_}, timeout=20)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == "image/jpeg"
            # the photo of that id (JPEG re-encoded twice: a few grey levels), much closer than any other
            pixels = np.asarray(_decoded(response.content).convert("RGB"), np.float32)
            errors = [np.abs(pixels - _expected_thumbnail(photo)).mean() for photo in photos]
            assert errors[position] < 8 and errors[position] < 0.5 * min(np.delete(errors, position)), errors
            again = httpx.get(f"{url}/thumbnail", params={"id": id_}, timeout=20)
            assert again.content == response.content  # the cached bytes


def test_a_thumbnail_is_resized_and_only_ids_of_the_served_index_have_one(galleries, photos, tiny_ort_encoder,
                                                                          tmp_path):
    big = tmp_path / "gallery" / "big.png"
    big.parent.mkdir()
    Image.new("RGB", (900, 300), (200, 30, 30)).save(big)
    index = _embed_gallery(tiny_ort_encoder, big.parent, tmp_path)
    with running_server(create_app(tiny_ort_encoder, index, ServeSettings(max_wait_ms=1))) as url:
        response = httpx.get(f"{url}/thumbnail", params={"id": "big.png"}, timeout=20)
        assert response.status_code == 200 and _decoded(response.content).size == (256, 85)
        # a real file that is not in the index, paths, traversal: the request's text is never a path
        for id_ in (str(photos[0]), str(big), "../gallery/big.png", "/etc/passwd", "big.png/", "nope"):
            response = httpx.get(f"{url}/thumbnail", params={"id": id_}, timeout=20)
            assert response.status_code == 404, id_
            assert "no gallery photo with id" in response.json()["detail"]
        assert httpx.get(f"{url}/thumbnail", timeout=20).status_code == 422
        big.unlink()  # in the index, gone from disk: a server-side problem, said as such
        response = httpx.get(f"{url}/thumbnail", params={"id": "big.png"}, timeout=20)
        assert response.status_code == 200  # cached before the file went
    with running_server(create_app(tiny_ort_encoder, index, ServeSettings(max_wait_ms=1))) as url:
        response = httpx.get(f"{url}/thumbnail", params={"id": "big.png"}, timeout=20)
        assert response.status_code == 500 and "unreadable" in response.json()["detail"]


def test_the_page_is_open_but_searches_and_thumbnails_need_the_token(galleries, tiny_ort_encoder):
    index = galleries["tar"]
    with running_server(create_app(tiny_ort_encoder, index, ServeSettings(max_wait_ms=1), token=TOKEN)) as url:
        page = httpx.get(f"{url}/", timeout=20)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'id="sketch"' in page.text and "static/page.js" in page.text
        for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
            response = httpx.get(f"{url}/static/{name}", timeout=20)
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        assert httpx.get(f"{url}/static/index.html", timeout=20).status_code == 401  # only the named files are open
        thumbnail = f"{url}/thumbnail?id=00007/k000"
        assert httpx.get(thumbnail, timeout=20).status_code == 401
        assert httpx.get(thumbnail, headers={"Authorization": "Bearer wrong-token-0123456789"}, timeout=20).status_code == 401
        assert httpx.get(thumbnail, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20).status_code == 200
    with running_server(create_app(tiny_ort_encoder, index, ServeSettings(max_wait_ms=1))) as url:
        assert httpx.get(f"{url}/static/page.html", timeout=20).status_code == 404
        assert httpx.get(f"{url}/static/..%2Fpage.py", timeout=20).status_code == 404


def test_strokes_json_as_the_page_sends_it_gives_the_embedding_of_the_same_drawing_as_a_file(
        galleries, tiny_ort_encoder, tmp_path):
    index = galleries["folder"]
    k = len(index)  # every gallery score: equal scores against all of them = the same embedding
    ndjson = tmp_path / "drawing.ndjson"
    ndjson.write_text(json.dumps({"key_id": "1", **DRAWING}) + "\n")
    png = io.BytesIO()
    render_drawing(parse_drawing_json(ndjson.read_bytes(), "drawing")[1]).save(png, format="PNG")
    with running_server(create_app(tiny_ort_encoder, index, ServeSettings(max_wait_ms=1))) as url:
        as_page = httpx.post(f"{url}/search", params={"k": k}, content=json.dumps(DRAWING),
                             headers={"Content-Type": "application/json"}, timeout=20).json()["results"]
        as_file = httpx.post(f"{url}/search", files={"image": ("drawing.ndjson", ndjson.read_bytes())},
                             data={"k": str(k)}, timeout=20).json()["results"]
        as_png = httpx.post(f"{url}/search", content=png.getvalue(), params={"k": k},
                            headers={"Content-Type": "image/png"}, timeout=20).json()["results"]
    scores, ids = reference_search(tiny_ort_encoder, index, [str(ndjson)], k)
    for answer in (as_page, as_file):
        assert [hit["id"] for hit in answer] == list(ids[0])
        np.testing.assert_allclose([hit["score"] for hit in answer], scores[0], atol=1e-6)
    # the server's strokes renderer is the one a PNG of the drawing comes from: the same pixels
    np.testing.assert_allclose([hit["score"] for hit in as_png], [hit["score"] for hit in as_page], atol=1e-6)


@pytest.mark.parametrize("kind", ["tar", "parquet"])
def test_with_the_store_served_thumbnails_follow_its_keys_and_the_page_gets_captions(kind, galleries, photos, root,
                                                                                   tiny_ort_encoder):
    app = create_app(tiny_ort_encoder, galleries[kind], ServeSettings(max_wait_ms=1))
    with running_server(app) as url:
        assert httpx.get(f"{url}/page/config", timeout=20).json() == {"metadata": False, "max_k": 1000}
    app = create_app(tiny_ort_encoder, galleries[kind], ServeSettings(max_wait_ms=1))
    app.state.service.use_store(root / kind / "store")
    with running_server(app) as url:
        assert httpx.get(f"{url}/page/config", timeout=20).json()["metadata"] is True
        id_ = {"tar": "00007/k003", "parquet": "p003"}[kind]
        response = httpx.get(f"{url}/thumbnail", params={"id": id_}, timeout=20)
        assert response.status_code == 200, response.text
        pixels = np.asarray(_decoded(response.content).convert("RGB"), np.float32)
        errors = [np.abs(pixels - _expected_thumbnail(photo)).mean() for photo in photos]
        assert int(np.argmin(errors)) == 3
        hits = httpx.post(f"{url}/search", params={"k": 8, "metadata": "true"}, content=json.dumps(DRAWING),
                          headers={"Content-Type": "application/json"}, timeout=20).json()["results"]
        if kind == "tar":  # the shard's .txt members are the captions the page shows
            assert all(hit["metadata"]["caption"] == f"caption {int(hit['id'][-3:])}" for hit in hits)
