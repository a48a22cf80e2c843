"""A real `splip-engine embed` process (its encoder slowed, see slowjob.py) killed or interrupted
mid-run: SIGKILL loses at most the work since the last commit, which comes by time as well as by
rows; Ctrl-C (SIGINT to the process group, as a terminal sends it) stops within about a second,
commits what is done, says in one line how to resume and exits 130; the resumed job completes."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data.imagefactory import make_gallery
from splip_engine.index import open_store

from .test_crash_safety import _assert_complete, _assert_consistent, _inputs

N_GOOD = 48  # 12 batches of 4 (+ the 3 bad files), each batch SLEEP_S long: ~3 s of embedding
SLEEP_S = 0.25
COMMIT_S = 0.5  # --commit-every-s; --shard-size stays at its default (16384): no shard fills up in this job
STOP_WITHIN_S = 3.0  # "about a second", with room for a shared 2-core machine; it took ~10 s before
SLOWJOB = Path(__file__).with_name("slowjob.py")


def _embed_argv(tiny_engine_dir: Path, gallery: Path, out: Path, workers: int) -> list[str]:
    return ["embed", "--engine", str(tiny_engine_dir), "--input", str(gallery), "--out", str(out), "--batch-size", "4",
            "--workers", str(workers), "--backend", "onnxruntime", "--device", "cpu", "--commit-every-s", str(COMMIT_S)]


def _start(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SLOWJOB), str(SLEEP_S), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=Path(__file__).parents[1])  # tests/: slowjob imports the package only


def _committed_rows(store: Path) -> int:
    try:
        return json.loads((store / "store.json").read_text())["counts"]["rows"]
    except (OSError, ValueError):  # not created yet, or being replaced (rename is atomic; the read may race it)
        return 0


def _wait_for_first_commit(proc: subprocess.Popen, store: Path, timeout: float = 60.0) -> int:
    """Rows in the first commit that holds any, seen while `proc` still runs."""
    deadline = time.monotonic() + timeout
    while (rows := _committed_rows(store)) == 0:
        assert proc.poll() is None, ("the job ended before committing a row mid-run (commits only by rows?):\n"
                                     + proc.stderr.read())
        assert time.monotonic() < deadline, "no commit within the timeout"
        time.sleep(0.02)
    return rows


@pytest.fixture
def gallery(tmp_path):
    root = tmp_path / "gallery"
    bad = make_gallery(root, N_GOOD, seed=3)
    return root, *_inputs(root, bad)


def test_sigkilled_embed_keeps_the_rows_committed_by_time_and_resumes(gallery, tiny_engine_dir, tiny_ort_encoder, tmp_path):
    root, good, bad = gallery
    store = tmp_path / "store"
    proc = _start(_embed_argv(tiny_engine_dir, root, store, workers=0))
    first = _wait_for_first_commit(proc, store)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    kept = _assert_consistent(store, good, bad, tiny_ort_encoder)
    assert first <= kept < len(good), (first, kept, len(good))  # committed mid-run, by time: the default shard never filled up
    resumed = subprocess.run([sys.executable, "-m", "splip_engine", *_embed_argv(tiny_engine_dir, root, store, 0)],
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    _assert_complete(store, good, bad, tiny_ort_encoder)


def test_ctrl_c_stops_embed_within_a_second_commits_and_says_how_to_resume(gallery, tiny_engine_dir, tiny_ort_encoder,
                                                                             tmp_path):
    root, good, bad = gallery
    store = tmp_path / "store"
    argv = _embed_argv(tiny_engine_dir, root, store, workers=1)  # a decode worker busy on its unit: it used to take ~10 s
    proc = _start(argv)
    first = _wait_for_first_commit(proc, store)
    sent = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole foreground group
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    assert took < STOP_WITHIN_S, f"took {took:.1f} s to stop after Ctrl-C"
    assert "Traceback" not in stderr and "Aborted!" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    match = re.fullmatch(r"interrupted: (\d+) rows and (\d+) errors are committed in (\S+); "
                         r"run splip-engine (embed .*) again to resume", last)
    assert match, last
    rows = _assert_consistent(store, good, bad, tiny_ort_encoder)
    assert int(match.group(1)) == rows and first <= rows < len(good) and match.group(3) == str(store)
    assert match.group(4).split() == argv  # the very command, to paste
    resumed = subprocess.run([sys.executable, "-m", "splip_engine", *argv], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    _assert_complete(store, good, bad, tiny_ort_encoder)
