"""Serving throughput and latency: req/s, p50 and p99 at 1, 8 and 32 concurrent clients, for
POST /search and for v2 infer (the Open Inference Protocol, binary tensors, the request bytes
tritonclient builds), with the tiny and the ViT-B-32 SpLIP engines (random weights: speed does not
depend on them), ONNX Runtime fp32 on CPU, a 10,000-photo flat index, bearer auth and the
access log on (as deployed).

Run (quiet machine): flock -x /tmp/splip-cpu.lock .venv/bin/python benchmarks/bench_serve.py
Each engine is served by a real `splip-engine serve` process on 127.0.0.1; the clients (httpx,
asyncio, one process) share the machine's cores with it. Each cell: 1 s of warm-up, then
--seconds of closed-loop load (every client sends its next request when the last is answered).
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

TOKEN = "bench-token-0123456789abcdef"
GALLERY, K = 10_000, 10
CLIENTS = (1, 8, 32)


def export_engine(clip_model: str, out: Path) -> Path:
    """The fp32 ONNX engine of a random-weight SpLIP `clip_model` (cached in `out`)."""
    if (out / "manifest.json").is_file():
        return out
    from splip_engine import SpLIPConfig, build_model
    from splip_engine.export.exporter import export_engines

    model = build_model(SpLIPConfig(clip_model=clip_model, pretrained="")).eval()
    report = export_engines(model, out)
    assert report, report.errors
    return out


def build_gallery(engine: Path, out: Path) -> Path:
    from splip_engine.index import GalleryIndex

    manifest = json.loads((engine / "manifest.json").read_text())
    dim = int(manifest["embedding_dim"])
    vectors = np.random.default_rng(0).standard_normal((GALLERY, dim)).astype(np.float32)  # (G, D)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    engine_info = {"engine_hash": manifest["engine_hash"], "embedding_dim": dim}
    return GalleryIndex.build(vectors, [f"photo-{i}" for i in range(GALLERY)], "flat",
                              engine_info=engine_info).save(out)


def sketch_png(size: int = 256) -> bytes:
    rng = np.random.default_rng(1)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        draw.line([tuple(rng.integers(0, size, 2)), tuple(rng.integers(0, size, 2))], fill="black", width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def v2_request(png: bytes) -> tuple[bytes, dict[str, str]]:
    """The body and headers tritonclient.http sends for one image, k=K, binary outputs."""
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([png], dtype=object))
    body, header_length = httpclient.InferenceServerClient.generate_request_body([tensor], parameters={"k": K})
    return body, {"Inference-Header-Content-Length": str(header_length)}


class Server:
    """A `splip-engine serve` process on a free port."""

    def __init__(self, engine: Path, index: Path, work: Path):
        (work / "token").write_text(TOKEN)
        self.log = open(work / f"serve-{engine.name}.log", "w")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splip_engine", "serve", "--engine", str(engine), "--index", str(index),
             "--port", "0", "--backend", "onnxruntime", "--device", "cpu", "--auth-token-file", str(work / "token")],
            stdout=self.log, stderr=subprocess.STDOUT)
        log_path, deadline = Path(self.log.name), time.monotonic() + 300
        while not (match := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())):
            assert self.proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        self.url = f"http://127.0.0.1:{match.group(1)}"
        while httpx.get(f"{self.url}/v2/health/ready", headers=auth()).status_code != 200:
            time.sleep(0.1)

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def load(url: str, endpoint: str, png: bytes, clients: int, seconds: float) -> dict:
    """Closed-loop load: `clients` concurrent clients for `seconds`; latencies of 200s, other statuses."""
    if endpoint == "search":
        path, body, headers = f"/search?k={K}", png, {"Content-Type": "image/png"}
    else:
        path = "/v2/models/splip/infer"
        body, headers = v2_request(png)
    headers.update(auth())
    latencies, errors = [], 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        async def client(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                start = time.perf_counter()
                response = await http.post(path, content=body, headers=headers)
                if record:
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1

        await asyncio.gather(*(client(time.perf_counter() + 1.0, False) for _ in range(clients)))  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(start + seconds, True) for _ in range(clients)))
        wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "requests": len(ms), "errors": errors, "req_s": round(len(ms) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/splip-bench-serve"))
    parser.add_argument("--engines", default="tiny,ViT-B-32")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed load per cell (ViT-B-32: 2x)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here too")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    png, rows = sketch_png(), []
    for clip_model in args.engines.split(","):
        engine = export_engine(clip_model, args.work / f"engine-{clip_model}")
        index = build_gallery(engine, args.work / f"index-{clip_model}")
        server = Server(engine, index, args.work)
        try:
            for endpoint in ("search", "v2"):
                for clients in CLIENTS:
                    seconds = args.seconds * (2 if clip_model != "tiny" else 1)
                    server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
                    row = {"engine": clip_model, "endpoint": endpoint,
                           **asyncio.run(load(server.url, endpoint, png, clients, seconds)),
                           # CPU over warm-up + load: where the 2 cores went (server vs these clients)
                           "server_cpu_s": round(server.cpu_seconds() - server_cpu, 1),
                           "client_cpu_s": round(time.process_time() - client_cpu, 1),
                           "load_avg_1m": os.getloadavg()[0]}  # > ~2.5: something else ran on the 2 cores
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            server.stop()
    print("\n| engine | endpoint | clients | req/s | p50 ms | p99 ms | requests | errors |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        endpoint = "POST /search" if r["endpoint"] == "search" else "POST /v2/models/splip/infer"
        print(f"| {r['engine']} | {endpoint} | {r['clients']} | {r['req_s']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['requests']} | {r['errors']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
