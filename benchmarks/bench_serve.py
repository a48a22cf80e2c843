"""Serving throughput and latency: req/s, p50 and p99 at 1, 8 and 32 concurrent clients, for
POST /search, v2 infer over HTTP and ModelInfer over gRPC (the Open Inference Protocol; the request
bytes tritonclient.http / tritonclient.grpc build, binary tensors), with the tiny and the ViT-B-32
SpLIP engines (random weights: speed does not depend on them), ONNX Runtime fp32 on CPU (--backends
onnxruntime,auto: also what `auto` picks, one server each, cells interleaved), a
10,000-photo flat index, bearer auth and the access log on (as deployed). With --metadata-rows N:
hit metadata on vs off at k = 10 and 1,000 over an N-row store and flat index (tiny engine).

Run (quiet machine): flock -x /tmp/splip-cpu.lock .venv/bin/python benchmarks/bench_serve.py
Each engine is served by a real `splip-engine serve --grpc-port` process on 127.0.0.1; the clients
(httpx and grpc.aio, asyncio, one process) share the machine's cores with it. For each client
count the endpoints take turns, --rounds times (so drift of a shared machine hits them alike):
each turn 1 s of warm-up, then --seconds of closed-loop load (every client sends its next request
when the last is answered); a cell pools its turns.
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

import grpc
import httpx
import numpy as np
from PIL import Image, ImageDraw

TOKEN = "bench-token-0123456789abcdef"
GALLERY, K = 10_000, 10
CLIENTS = (1, 8, 32)
ENDPOINTS = ("search", "v2", "grpc")
LABELS = {"search": "POST /search", "v2": "POST /v2/models/splip/infer", "grpc": "gRPC ModelInfer"}
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"


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


def build_store_gallery(engine: Path, rows: int, work: Path) -> tuple[Path, Path]:
    """(store, flat index over it) of `rows` synthetic photos shaped like an img2dataset crawl: tar
    shards of 10,000, a caption and a json (url, size, status) per row; cached in `work`."""
    from splip_engine.index import StoreWriter, build_index, open_store
    from splip_engine.index.synthetic import synthetic_embeddings

    store, index = work / f"store-{rows}", work / f"store-index-{rows}"
    if (index / "index.json").is_file():
        return store, index
    manifest = json.loads((engine / "manifest.json").read_text())
    dim, chunk = int(manifest["embedding_dim"]), 65536
    vectors, _ = synthetic_embeddings(rows, dim, dtype=np.float16)  # (N, D)
    engine_info = {"engine_hash": manifest["engine_hash"], "embedding_dim": dim}
    with StoreWriter(store, dim, "photo", engine_info, shard_size=chunk) as writer:
        for start in range(0, rows, chunk):
            n = range(start, min(start + chunk, rows))
            writer.add(vectors[start:start + len(n)], [f"{i // 10000:05d}/{i:09d}" for i in n],
                       [f"/data/shards/{i // 10000:05d}.tar" for i in n],
                       metadata={"key": [f"{i:09d}" for i in n],
                                 "caption": [f"a photo of item {i} on a wooden table" for i in n],
                                 "json": [json.dumps({"url": f"https://example.com/images/{i}.jpg", "width": 640,
                                                      "height": 480, "status": "success"}) for i in n]})
    build_index(open_store(store), index, "flat")
    return store, index


def metadata_lookup_ms(store: Path, k: int, repeats: int = 50) -> dict:
    """StoreMetadata load time and memory, and the median time of one k-id lookup (in-process)."""
    from splip_engine.index.metadata import StoreMetadata

    start = time.perf_counter()
    meta = StoreMetadata.load(store)
    load_s = time.perf_counter() - start
    rng, times = np.random.default_rng(0), []
    for _ in range(repeats):
        ids = [f"{i // 10000:05d}/{i:09d}" for i in rng.integers(0, meta.count, k)]
        start = time.perf_counter()
        meta.lookup(ids)
        times.append(time.perf_counter() - start)
    return {"rows": meta.count, "mib": round(meta.nbytes / 2**20, 1), "load_s": round(load_s, 2), "k": k,
            "lookup_ms_p50": round(float(np.median(times)) * 1000, 2)}


def sketch_png(size: int = 256) -> bytes:
    rng = np.random.default_rng(1)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        draw.line([tuple(rng.integers(0, size, 2)), tuple(rng.integers(0, size, 2))], fill="black", width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def v2_request(png: bytes, parameters: dict) -> tuple[bytes, dict[str, str]]:
    """The body and headers tritonclient.http sends for one image, binary outputs."""
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([png], dtype=object))
    body, header_length = httpclient.InferenceServerClient.generate_request_body([tensor], parameters=parameters)
    return body, {"Inference-Header-Content-Length": str(header_length)}


def grpc_request(png: bytes, parameters: dict) -> bytes:
    """The ModelInferRequest bytes tritonclient.grpc sends for one image (raw_input_contents)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc._utils import _get_inference_request

    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([png], dtype=object))
    return _get_inference_request("splip", [tensor], "", "", None, 0, False, False, 0, None,
                                  parameters).SerializeToString()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A `splip-engine serve` process on a free port."""

    def __init__(self, engine: Path, index: Path, work: Path, store: Path | None = None, backend: str = "onnxruntime"):
        (work / "token").write_text(TOKEN)
        self.log = open(work / f"serve-{engine.name}-{backend}.log", "w")  # noqa: SIM115 -- closed in stop()
        self.grpc_address = f"127.0.0.1:{free_port()}"
        env = {**os.environ, "SPLIP_ENGINE_CACHE": str(work / "auto-cache")}  # auto decides on this machine
        env.pop("SPLIP_CPU_ENGINE", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "splip_engine", "serve", "--engine", str(engine), "--index", str(index),
             "--port", "0", "--grpc-port", self.grpc_address.rsplit(":", 1)[1], "--backend", backend,
             "--device", "cpu", "--auth-token-file", str(work / "token"), "--max-k", "1000",
             *(["--store", str(store)] if store else [])],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        log_path, deadline = Path(self.log.name), time.monotonic() + 300
        while not (match := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())):
            assert self.proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        self.url = f"http://127.0.0.1:{match.group(1)}"
        while httpx.get(f"{self.url}/v2/health/ready", headers=auth()).status_code != 200:
            time.sleep(0.1)
        self.engine = backend if backend != "auto" else auto_decision(work / "auto-cache")

    def cpu_seconds(self) -> float:
        """User + system CPU the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def auto_decision(cache: Path) -> str:
    """What `serve --backend auto` picked on this CPU, from its decision cache: "auto: BACKEND PRECISION"."""
    decisions = [d for f in sorted(cache.glob("cpu-auto-*.json")) for d in json.loads(f.read_text()).values()]
    return "auto: " + ", ".join(f"{d['backend']} {d['precision']}" for d in decisions)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def load(server: Server, endpoint: str, png: bytes, clients: int, seconds: float, k: int = K,
               metadata: bool = False) -> tuple[list[float], int, float]:
    """Closed-loop load: `clients` concurrent clients for `seconds` after 1 s of warm-up;
    (latencies of the answered requests in s, failed requests, wall seconds)."""
    parameters = {"k": k, **({"metadata": True} if metadata else {})}
    latencies, errors = [], 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as http, \
            grpc.aio.insecure_channel(server.grpc_address, options=[("grpc.max_receive_message_length", -1)]) as channel:
        if endpoint == "grpc":
            infer, body = channel.unary_unary(GRPC_INFER), grpc_request(png, parameters)
            grpc_metadata = (("authorization", f"Bearer {TOKEN}"),)

            async def send() -> bool:
                try:
                    await infer(body, metadata=grpc_metadata, timeout=120)
                    return True
                except grpc.aio.AioRpcError:
                    return False
        else:
            if endpoint == "search":
                path = f"/search?k={k}" + ("&metadata=true" if metadata else "")
                body, headers = png, {"Content-Type": "image/png", **auth()}
            else:
                path = "/v2/models/splip/infer"
                body, headers = v2_request(png, parameters)
                headers.update(auth())

            async def send() -> bool:
                return (await http.post(path, content=body, headers=headers)).status_code == 200

        async def client(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                start = time.perf_counter()
                ok = await send()
                if record:
                    if ok:
                        latencies.append(time.perf_counter() - start)
                    else:
                        errors += 1

        await asyncio.gather(*(client(time.perf_counter() + 1.0, False) for _ in range(clients)))  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(client(start + seconds, True) for _ in range(clients)))
        return latencies, errors, time.perf_counter() - start


def measure(server: Server, endpoints: tuple[str, ...], png: bytes, clients: int, seconds: float, rounds: int,
            **options) -> list[dict]:
    """One row per endpoint, its turns interleaved with the others' `rounds` times."""
    pooled = {e: {"latencies": [], "errors": 0, "wall": 0.0, "server_cpu_s": 0.0, "client_cpu_s": 0.0}
              for e in endpoints}
    for _ in range(rounds):
        for endpoint in endpoints:
            server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
            latencies, errors, wall = asyncio.run(load(server, endpoint, png, clients, seconds, **options))
            cell = pooled[endpoint]
            cell["latencies"] += latencies
            cell["errors"] += errors
            cell["wall"] += wall
            # CPU over warm-up + load: where the 2 cores went (server vs these clients)
            cell["server_cpu_s"] += server.cpu_seconds() - server_cpu
            cell["client_cpu_s"] += time.process_time() - client_cpu
    rows = []
    for endpoint, cell in pooled.items():
        ms = np.asarray(cell["latencies"]) * 1000
        rows.append({"endpoint": endpoint, "clients": clients, **options, "requests": len(ms), "errors": cell["errors"],
                     "req_s": round(len(ms) / cell["wall"], 1), "p50_ms": round(float(np.percentile(ms, 50)), 1),
                     "p99_ms": round(float(np.percentile(ms, 99)), 1),
                     "server_cpu_s": round(cell["server_cpu_s"], 1), "client_cpu_s": round(cell["client_cpu_s"], 1),
                     "load_avg_1m": os.getloadavg()[0]})  # > ~2.5: something else ran on the 2 cores
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/splip-bench-serve"))
    parser.add_argument("--engines", default="tiny,ViT-B-32", help="comma-separated; '' for none")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed load per turn (ViT-B-32: 2x)")
    parser.add_argument("--rounds", type=int, default=2, help="turns per cell, interleaved across endpoints")
    parser.add_argument("--backends", default="onnxruntime",
                        help="comma-separated serve --backend values, one server each, cells interleaved "
                             "(onnxruntime,auto: the CPU engine before / after auto)")
    parser.add_argument("--endpoints", default=",".join(ENDPOINTS), help=f"comma-separated subset of {ENDPOINTS}")
    parser.add_argument("--metadata-rows", type=int, default=0,
                        help="also time hit metadata on vs off over a store of this many rows (e.g. 1000000)")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here too")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    png, rows = sketch_png(), []
    endpoints = tuple(args.endpoints.split(","))
    for clip_model in filter(None, args.engines.split(",")):
        engine = export_engine(clip_model, args.work / f"engine-{clip_model}")
        index = build_gallery(engine, args.work / f"index-{clip_model}")
        servers = {}
        try:
            for backend in args.backends.split(","):
                servers[backend] = Server(engine, index, args.work, backend=backend)
            seconds = args.seconds * (2 if clip_model != "tiny" else 1)
            for clients in CLIENTS:
                for backend, server in servers.items():
                    rows += [{"engine": clip_model, "backend": backend, "chosen": server.engine, **row}
                             for row in measure(server, endpoints, png, clients, seconds, args.rounds)]
        finally:
            for server in servers.values():
                server.stop()
    if args.metadata_rows:
        engine = export_engine("tiny", args.work / "engine-tiny")
        store, index = build_store_gallery(engine, args.metadata_rows, args.work)
        lookups = [metadata_lookup_ms(store, k) for k in (10, 1000)]
        print(json.dumps(lookups), flush=True)
        server = Server(engine, index, args.work, store=store)
        try:
            for k in (10, 1000):
                for metadata in (False, True):
                    rows += [{"engine": "tiny", "gallery": args.metadata_rows, **row, "lookup": lookups}
                             for row in measure(server, ("search", "grpc"), png, 8, args.seconds, args.rounds,
                                                k=k, metadata=metadata)]
        finally:
            server.stop()
    print("\n| engine | backend | endpoint | clients | k | metadata | req/s | p50 ms | p99 ms | requests | errors |")
    print("| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['engine']}{' (%d rows)' % r['gallery'] if 'gallery' in r else ''} | "
              f"{r.get('backend', 'onnxruntime')} | {LABELS[r['endpoint']]} | "
              f"{r['clients']} | {r.get('k', K)} | {'on' if r.get('metadata') else 'off'} | {r['req_s']} | "
              f"{r['p50_ms']} | {r['p99_ms']} | {r['requests']} | {r['errors']} |")
    if args.out:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        flags = sorted(set(re.findall(r"avx512_bf16|amx_bf16|avx512_vnni|avx512f", Path("/proc/cpuinfo").read_text())))
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
        args.out.write_text(json.dumps({"commit": commit, "cpu": cpu, "cpu_flags": flags, "cores": os.cpu_count(),
                                        "command": " ".join(sys.argv), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
