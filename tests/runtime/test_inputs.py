"""The input registry: every kind lists the documented ids lazily, bad shards become errors naming
the shard and the key, and unusable inputs are one clear error."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from splip_engine.errors import SpLIPError
from splip_engine.runtime import inputs
from splip_engine.runtime.inputs import Record, RecordError, list_records, open_input

from .shardfactory import (caption, photo_jpegs, quickdraw_line, side_json, write_bytes_parquet, write_folder,
                           write_shards, write_tar)

PHOTOS = photo_jpegs(10)


def _split(records) -> tuple[list[Record], list[RecordError]]:
    records = list(records)
    return [r for r in records if isinstance(r, Record)], [r for r in records if isinstance(r, RecordError)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), PHOTOS, per_shard=4)  # 00000..00002, 4 + 4 + 2


@pytest.mark.parametrize("spelling", ["pattern", "directory", "list", "one shard"])
def test_tar_shards_give_shard_slash_key_ids_with_their_side_members(shards, tmp_path, spelling):
    directory = shards[0].parent
    (tmp_path / "shards.txt").write_text("".join(f"{s}\n" for s in shards))
    source = {"pattern": f"{directory}/{{00000..00002}}.tar", "directory": directory,
              "list": tmp_path / "shards.txt", "one shard": shards[1]}[spelling]
    resolved = open_input(source)
    assert resolved.kind == "tar"
    records, errors = _split(list_records(source))
    keys = list(PHOTOS)
    expected = keys[4:8] if spelling == "one shard" else keys
    assert errors == []
    assert [r.id for r in records] == [f"{int(k) // 4:05d}/{k}" for k in expected]  # <shard stem>/<key>
    assert [r.source for r in records] == [PHOTOS[k] for k in expected]  # the jpg member's bytes
    assert [(r.caption, r.json, r.key) for r in records] == [(caption(k), side_json(k), k) for k in expected]
    assert all(r.path == str(shards[int(r.key) // 4]) for r in records)


def test_tar_records_are_keyed_as_webdataset_keys_them(shards):
    import webdataset as wds

    theirs = [sample["__key__"] for sample in wds.WebDataset([str(s) for s in shards], shardshuffle=False)]
    assert [r.key for r in list_records(shards[0].parent)] == theirs


def test_img2dataset_side_files_beside_the_shards_are_not_inputs(shards, tmp_path):
    copy = tmp_path / "out"
    write_shards(copy, PHOTOS, per_shard=4)
    (copy / "00000.parquet").write_bytes(b"img2dataset's metadata parquet")
    (copy / "00000_stats.json").write_text(json.dumps({"successes": 4}))
    for n in (1, 2):
        (copy / f"{n:05d}_stats.json").write_text(json.dumps({"successes": 4 if n == 1 else 2}))
    resolved = open_input(copy)
    assert resolved.kind == "tar" and [p.rsplit("/", 1)[1] for p in resolved.files] == [f"{n:05d}.tar" for n in range(3)]
    assert resolved.count() == 10  # from the stats files, without reading a shard


def test_a_brace_pattern_matching_no_file_is_one_clear_error(tmp_path):
    with pytest.raises(SpLIPError, match=r"input pattern .*\{00000\.\.00099\}\.tar' matches no file \(100 names, "
                                         r"e\.g\. '.*00000\.tar'\)"):
        open_input(f"{tmp_path}/{{00000..00099}}.tar")


def test_shards_a_pattern_names_but_that_are_missing_are_listed(shards):
    records, errors = _split(list_records(f"{shards[0].parent}/{{00000..00004}}.tar"))
    assert len(records) == 10
    assert [(e.id, e.key) for e in errors] == [("00003/", ""), ("00004/", "")]
    assert all("cannot read shard" in e.reason and e.path.endswith(e.id[:5] + ".tar") for e in errors)


def test_bad_shards_and_members_are_errors_naming_the_shard_and_key(tmp_path):
    jpg = next(iter(PHOTOS.values()))
    write_tar(tmp_path / "00000.tar", [("a.jpg", jpg), ("a.txt", b"cap a"), ("b.cls", b"3"), ("b.txt", b"no image"),
                                       ("c.jpg", b"not a jpeg at all"), ("d.jpg", jpg)])
    (tmp_path / "00001.tar").write_bytes(b"")
    write_tar(tmp_path / "00002.tar", [])
    whole = write_tar(tmp_path / "whole.tar", [("e.jpg", jpg), ("f.jpg", jpg), ("g.jpg", jpg)]).read_bytes()
    data_of_f = 2 * 512 + (len(jpg) + 511) // 512 * 512
    (tmp_path / "00003.tar").write_bytes(whole[:data_of_f + len(jpg) // 2])  # the final shard, cut inside f.jpg
    (tmp_path / "whole.tar").unlink()
    records, errors = _split(list_records(tmp_path))
    assert [r.id for r in records] == ["00000/a", "00000/c", "00000/d", "00003/e"]  # c fails later, at decoding
    by_id = {e.id: e for e in errors}
    assert sorted(by_id) == ["00000/b", "00001/", "00002/", "00003/f"]
    assert "has no jpg|jpeg|png|webp member (members: .cls, .txt)" in by_id["00000/b"].reason
    assert by_id["00000/b"].key == "b" and by_id["00000/b"].path == str(tmp_path / "00000.tar")
    assert "is empty (0 bytes)" in by_id["00001/"].reason
    assert "holds no records (an empty tar)" in by_id["00002/"].reason
    assert "truncated" in by_id["00003/f"].reason and by_id["00003/f"].key == "f"


def test_a_shard_cut_inside_a_tar_header_is_reported_truncated(tmp_path):
    jpg = next(iter(PHOTOS.values()))
    whole = write_tar(tmp_path / "w.tar", [("e.jpg", jpg), ("f.jpg", jpg)]).read_bytes()
    header_of_f = 512 + (len(jpg) + 511) // 512 * 512
    (tmp_path / "00000.tar").write_bytes(whole[:header_of_f + 100])  # tarfile alone would end quietly here
    (tmp_path / "w.tar").unlink()
    records, errors = _split(list_records(tmp_path / "00000.tar"))
    assert [r.id for r in records] == []  # e's record may miss members that came after the cut
    assert [(e.id, e.key) for e in errors] == [("00000/e", "e")]
    assert "truncated: it ends inside the tar header after record 'e'" in errors[0].reason


def test_two_shards_with_one_name_are_refused(tmp_path, shards):
    other = write_shards(tmp_path / "b", PHOTOS, per_shard=4)
    (tmp_path / "list.txt").write_text(f"{shards[0]}\n{other[0]}\n")
    with pytest.raises(SpLIPError, match="holds two files named '00000'.*give every shard a distinct name"):
        open_input(tmp_path / "list.txt")


def test_image_bytes_parquet_ids_come_from_the_id_column(tmp_path):
    path = write_bytes_parquet(tmp_path / "part.parquet", PHOTOS, row_group_size=3)
    resolved = open_input(path)
    assert resolved.kind == "parquet-bytes" and resolved.count() == 10
    assert [u.name for u in resolved.units()] == [f"part#{g}" for g in range(4)]  # one unit per row group
    records, errors = _split(list_records(path))
    assert errors == [] and [r.id for r in records] == list(PHOTOS)
    assert [r.source for r in records] == list(PHOTOS.values())
    assert records[0].caption == caption(records[0].id)
    assert json.loads(records[0].json) == {"key": records[0].id, "url": f"https://example.com/{records[0].id}.jpg",
                                           "caption": caption(records[0].id), "status": "success"}
    renamed = pa.table({"uid": list(PHOTOS), "image": pa.array(list(PHOTOS.values()), pa.binary())})
    pq.write_table(renamed, tmp_path / "renamed.parquet")
    options = inputs.InputOptions(image_column="image", id_column="uid")
    assert [r.id for r in list_records(tmp_path / "renamed.parquet", options=options)] == list(PHOTOS)


def test_a_parquet_without_the_named_column_is_one_error_naming_its_columns(tmp_path):
    write_bytes_parquet(tmp_path / "p.parquet", PHOTOS)
    with pytest.raises(SpLIPError, match=r"has no 'image' image-bytes column and no 'path' column \(its columns: "
                                         r"\['key', 'url', 'caption', 'status', 'jpg'\]\); pass --image-column"):
        open_input(tmp_path / "p.parquet", options=inputs.InputOptions(image_column="image"))
    with pytest.raises(SpLIPError, match=r"has no 'uid' column \(its columns: \['key', 'url', 'caption', 'status', "
                                         r"'jpg'\]\); pass --id-column"):
        list(open_input(tmp_path / "p.parquet", options=inputs.InputOptions(id_column="uid")).units())
    pq.write_table(pa.table({"key": ["a"], "jpg": ["text, not bytes"]}), tmp_path / "s.parquet")
    with pytest.raises(SpLIPError, match="column 'jpg' of parquet .* holds string, not image bytes"):
        list(open_input(tmp_path / "s.parquet").units())


def test_a_null_image_row_is_an_error_with_its_status(tmp_path):
    table = pa.table({"key": ["a", "b"], "status": ["success", "failed_to_download"],
                      "error_message": [None, "HTTP 404"], "jpg": pa.array([next(iter(PHOTOS.values())), None])})
    pq.write_table(table, tmp_path / "p.parquet")
    records, errors = _split(list_records(tmp_path / "p.parquet"))
    assert [r.id for r in records] == ["a"]
    assert errors[0].id == "b" and "no image bytes (status 'failed_to_download': HTTP 404)" in errors[0].reason


def test_folder_list_and_paths_parquet_keep_their_ids(tmp_path):
    folder = write_folder(tmp_path / "g" / "sub", PHOTOS).parent
    paths = sorted(str(p) for p in folder.rglob("*.jpg"))
    assert [(r.id, r.path) for r in list_records(folder)] == [(f"sub/{k}.jpg", str(folder / "sub" / f"{k}.jpg"))
                                                              for k in PHOTOS]
    (tmp_path / "list.txt").write_text("# comment\n" + "\n".join(paths) + "\n")
    assert open_input(tmp_path / "list.txt").kind == "list"
    assert [r.id for r in list_records(tmp_path / "list.txt")] == paths
    pq.write_table(pa.table({"id": [f"x{i}" for i in range(len(paths))], "path": paths}), tmp_path / "t.parquet")
    assert open_input(tmp_path / "t.parquet").kind == "parquet-paths"
    assert [(r.id, r.source) for r in list_records(tmp_path / "t.parquet")][0] == ("x0", paths[0])
    (tmp_path / "dup.txt").write_text(f"{paths[0]}\n{paths[0]}\n")
    with pytest.raises(SpLIPError, match="lists id .* twice"):
        open_input(tmp_path / "dup.txt").count()
    with pytest.raises(SpLIPError, match="does not exist"):
        open_input(tmp_path / "nothing")


def test_file_kinds_leave_out_done_ids_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "FILE_CHUNK", 3)
    folder = write_folder(tmp_path / "g", PHOTOS)
    units = list(open_input(folder).units(is_done=lambda id_: id_ < "000000004.jpg"))
    assert [len(u.items) for u in units] == [3, 3] and units[0].items[0][0] == "000000004.jpg"
    assert all(u.key is None for u in units)


def test_quickdraw_ndjson_lines_are_records_keyed_by_key_id(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "NDJSON_CHUNK_BYTES", 500)  # several units per file
    lines = [quickdraw_line(str(5000000000000000 + i), word="cat" if i % 2 else "dog") for i in range(12)]
    lines.insert(5, "{not json")
    (tmp_path / "cat.ndjson").write_text("\n".join(lines) + "\n")
    resolved = open_input(tmp_path / "cat.ndjson")
    assert resolved.kind == "ndjson" and resolved.count() == 13
    assert len(list(resolved.units())) > 3
    records, errors = _split(list_records(tmp_path / "cat.ndjson"))
    assert [r.id for r in records] == [str(5000000000000000 + i) for i in range(12)]  # each line once, in order
    assert [r.source for r in records] == [line.encode() for line in lines if line != "{not json"]
    assert records[0].caption == "dog" and "drawing" not in json.loads(records[0].json)
    offset = sum(len(line) + 1 for line in lines[:5])
    assert [(e.id, e.key) for e in errors] == [(f"cat/@{offset}", f"@{offset}")]
    assert "not a QuickDraw drawing with a key_id" in errors[0].reason
    assert open_input(tmp_path).kind == "ndjson"


def test_a_forced_kind_must_fit_the_input(shards):
    with pytest.raises(SpLIPError, match="is tar, not parquet-bytes"):
        open_input(shards[0].parent, kind="parquet-bytes")
    with pytest.raises(SpLIPError, match="input kind 'zip' is not one of"):
        open_input(shards[0].parent, kind="zip")
