"""Draw-to-search latency in a real browser: the time from the end of a stroke to the updated grid
of results on the page at `/`, p50 / p95 over a scripted drawing session, for the tiny and the
ViT-B-32 SpLIP engines (random weights: speed does not depend on them).

Each engine is served by a real `splip-engine serve` process on 127.0.0.1 (ONNX Runtime fp32,
bearer auth and access log on, as deployed; bench_serve.Server) over a flat index of 192 photos of
the mini set embedded with that engine. Headless Chromium (Debian's, driven by selenium with the
driver's path given) opens the page, enters the token, and draws STROKES strokes with real
pointer events, waiting for each stroke's answer and then PAUSE_S before the next. The page's
hooks (window.splip.timings, performance.now() in the page) give per stroke: grid_ms (stroke end
-> grid updated; includes the page's 120 ms debounce), images_ms (-> every thumbnail decoded),
round_trip_ms (request sent -> answer shown) and the server's own latency_ms.

Run (quiet machine): flock -x /tmp/splip-cpu.lock .venv/bin/python benchmarks/bench_page.py
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from splip_engine.io_utils import write_text_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import TOKEN, Server, export_engine  # noqa: E402 -- the same served setup as bench_serve

STROKES, PAUSE_S = 24, 0.3
ENGINES = ("tiny", "ViT-B-32")


def build_gallery(engine: Path, work: Path) -> Path:
    """A flat index of the mini set's 192 photos (24 classes x 8) embedded with `engine` (cached)."""
    from splip_engine.data.mini import make_mini_dataset
    from splip_engine.index import GalleryIndex, open_store
    from splip_engine.runtime import load_engine
    from splip_engine.runtime.embed_job import run_embed

    out = work / f"index-{engine.name}"
    if (out / "index.json").is_file():
        return out
    data = work / "data"
    photos = data / "photo" if (data / "photo").is_dir() else make_mini_dataset(data, classes=24, per_class=8).photo_root
    with load_engine(engine, backend="onnxruntime", device="cpu") as encoder:
        run_embed(encoder, photos, work / f"store-{engine.name}", modality="photo", progress=False)
    return GalleryIndex.build_from_store(open_store(work / f"store-{engine.name}"), kind="flat").save(out)


def scripted_strokes(count: int, seed: int = 0) -> list[list[tuple[float, float]]]:
    """`count` smooth strokes of 6-12 points, as fractions of the canvas side (a fixed session)."""
    rng = np.random.default_rng(seed)
    strokes = []
    for _ in range(count):
        start, heading = rng.uniform(0.2, 0.8, 2), rng.uniform(0, 2 * np.pi)
        points = [start]
        for _ in range(int(rng.integers(6, 13))):
            heading += rng.normal(0, 0.5)
            points.append(np.clip(points[-1] + 0.05 * np.array([np.cos(heading), np.sin(heading)]), 0.05, 0.95))
        strokes.append([(float(x), float(y)) for x, y in points])
    return strokes


def open_browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def session(url: str, strokes: list) -> list[dict]:
    """Draw `strokes` on the page one by one; the page's timing of each stroke's answer."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    driver = open_browser()
    try:
        driver.get(url + "/")
        WebDriverWait(driver, 30).until(expected_conditions.visibility_of_element_located((By.ID, "token")))
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "token-ok").click()
        canvas = driver.find_element(By.ID, "sketch")
        side = canvas.size["width"]
        for count, stroke in enumerate(strokes, start=1):
            points = [(round((x - 0.5) * side), round((y - 0.5) * side)) for x, y in stroke]
            actions = ActionChains(driver, duration=15).move_to_element_with_offset(canvas, *points[0]).click_and_hold()
            for point in points[1:]:
                actions.move_to_element_with_offset(canvas, *point)
            actions.release().perform()
            deadline = time.monotonic() + 60
            while True:
                timing = driver.execute_script("const t = window.splip.timings; return t[t.length - 1] || null;")
                if timing and timing["strokes"] == count and timing["imagesMs"] is not None:
                    break
                assert time.monotonic() < deadline, f"no answer for stroke {count}"
                time.sleep(0.02)
            time.sleep(PAUSE_S)
        return driver.execute_script("return window.splip.timings")
    finally:
        driver.quit()


def summarize(timings: list[dict]) -> dict:
    summary = {"strokes": len(timings), "queries": len({t["seq"] for t in timings})}
    for key, name in (("gridMs", "grid_ms"), ("imagesMs", "images_ms"), ("roundTripMs", "round_trip_ms"),
                      ("serverMs", "server_ms")):
        values = np.asarray([t[key] for t in timings], dtype=np.float64)
        summary[name] = {"p50": round(float(np.percentile(values, 50)), 1),
                         "p95": round(float(np.percentile(values, 95)), 1)}
    return summary


def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    flags = sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16|amx_int8|avx512_vnni|avx512f|avx2)\b", cpuinfo)))
    chromium = subprocess.run(["chromium", "--version"], capture_output=True, text=True).stdout.strip()
    return {"cpu": model.group(1) if model else platform.processor(), "cpu_flags": flags,
            "cores": len(re.findall(r"^processor", cpuinfo, re.M)), "browser": chromium}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/splip-bench-page"), help="Engines and galleries (cached).")
    parser.add_argument("--engines", default=",".join(ENGINES), help="Comma-separated CLIP models.")
    parser.add_argument("--strokes", type=int, default=STROKES)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/page_latency.json"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
               **machine(), "pause_s": PAUSE_S, "debounce_ms": 120, "engines": {}}
    strokes = scripted_strokes(args.strokes)
    for clip_model in args.engines.split(","):
        engine = export_engine(clip_model, args.work / clip_model)
        index = build_gallery(engine, args.work)
        server = Server(engine, index, args.work)
        try:
            timings = session(server.url, strokes)
        finally:
            server.stop()
        results["engines"][clip_model] = {**summarize(timings), "timings": timings}
        print(clip_model, json.dumps({k: v for k, v in results["engines"][clip_model].items() if k != "timings"}))
    write_text_atomic(args.out, json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
