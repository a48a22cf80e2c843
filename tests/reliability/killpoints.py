"""SIGKILL a job at a chosen point: a child process runs the job under a `sys.setprofile` hook that
counts the calls made from the job's own source files (every function call and C call, e.g.
os.replace, os.fsync, np.save, an encoder call) and kills itself with SIGKILL just before the n-th.

The child first runs the job twice elsewhere (a warm-up, so lazy imports are done, then a counted
run in the same starting state as the real one), so `fraction` in (0, 1) maps to a call that is
surely reached: n = max(1, int(fraction * total calls)). Being counted, a kill point is exactly
reproducible from its fraction, unlike a timer.

Parent side: `run_killed(job, args, fraction, scope)`. Child side: `python killpoints.py JOB
FRACTION SCOPE_JSON ARGS_JSON`, with JOB one of
    cli         ARGS = the `splip-engine` argv with "{out}" where the output dir goes, plus the
                real output dir: [argv, out]; warm-up and count runs write beside `out`
    index-save  ARGS = [npz with `embeddings` and `ids`, index dir]: build a flat GalleryIndex of
                them and save it over the index already in the dir
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

EXIT_NOT_KILLED = 3  # the job ran to its end: the kill point was never reached
_MARK = "killpoint: "


class _CallCounter:
    """A sys.setprofile hook counting calls made from frames of `files`; SIGKILL before call `kill_at`."""

    def __init__(self, files: set[str], kill_at: int | None = None):
        self.files, self.kill_at, self.count = files, kill_at, 0

    def __call__(self, frame, event, arg) -> None:
        if event == "call":
            frame = frame.f_back  # the caller
        elif event != "c_call":
            return
        if frame is not None and frame.f_code.co_filename in self.files:
            self.count += 1
            if self.count == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    def run(self, job) -> int:
        sys.setprofile(self)
        try:
            job()
        finally:
            sys.setprofile(None)
        return self.count


def _cli_job(argv: list[str], out: str):
    from splip_engine.cli import main

    def run(where: str):
        def job():
            try:
                main([a.replace("{out}", where) for a in argv], standalone_mode=False)
            except SystemExit as e:
                if e.code:
                    raise
        return job

    return run(f"{out}.warmup"), run(f"{out}.counted"), run(out)


def _index_save_job(npz: str, directory: str):
    import numpy as np

    from splip_engine.index import GalleryIndex

    arrays = np.load(npz)
    index = GalleryIndex.build(arrays["embeddings"], [str(i) for i in arrays["ids"]], "flat")
    scratch = f"{directory}.scratch"
    index.save(scratch)  # a first save there, so the counted one replaces an index, as the real one does
    return (lambda: index.save(scratch)), (lambda: index.save(scratch)), (lambda: index.save(directory))


def _child(job: str, fraction: float, scope: list[str], args: list) -> None:
    import splip_engine

    root = Path(splip_engine.__file__).parent
    files = {str(root / relative) for relative in scope}
    warmup, counted, real = {"cli": _cli_job, "index-save": _index_save_job}[job](*args)
    warmup()
    total = _CallCounter(files).run(counted)
    kill_at = max(1, int(fraction * total))
    print(f"{_MARK}SIGKILL before call {kill_at} of {total}", file=sys.stderr, flush=True)
    _CallCounter(files, kill_at).run(real)
    sys.exit(EXIT_NOT_KILLED)


def run_killed(job: str, args: list, fraction: float, scope: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `job` in a child process killed by SIGKILL at `fraction` of its calls from `scope`
    (paths relative to the splip_engine package); assert it was killed, return the process."""
    proc = subprocess.run([sys.executable, __file__, job, repr(fraction), json.dumps(scope), json.dumps(args)],
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == -signal.SIGKILL, f"the child was not killed (exit {proc.returncode}):\n{proc.stderr}"
    return proc


def kill_point(proc: subprocess.CompletedProcess) -> str:
    """'call n of N' from the child's report, for messages."""
    return next(line for line in proc.stderr.splitlines() if line.startswith(_MARK))[len(_MARK):]


if __name__ == "__main__":
    _child(sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3]), json.loads(sys.argv[4]))
