"""Run a `splip-engine` command whose encoder sleeps SLEEP_S seconds per batch, so a job of a few
dozen tiny images lasts long enough to be killed or interrupted mid-run at a moment the parent picks.

Child side: `python slowjob.py SLEEP_S ARGV...` (the `splip-engine` argv). Everything but the
sleep is the real command: its store, its decode workers, its signal handling."""
from __future__ import annotations

import sys
import time

from splip_engine.cli import main
from splip_engine.runtime.base import Encoder


def _slowed(embed_pixels, sleep_s: float):
    def embed_pixels_slowly(self, pixels, modality):
        time.sleep(sleep_s)
        return embed_pixels(self, pixels, modality)

    return embed_pixels_slowly


if __name__ == "__main__":
    Encoder.embed_pixels = _slowed(Encoder.embed_pixels, float(sys.argv[1]))
    main(sys.argv[2:], prog_name="splip-engine")
