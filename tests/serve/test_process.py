"""The real `splip-engine serve` process (a subprocess on 127.0.0.1, ONNX Runtime engine) started
with `--auth-token-file`, traced by strace: every request but liveness needs the file's token, and
in ~15 s of serving no process of it connects anywhere but loopback (ONNX Runtime's native telemetry
resolves a Microsoft host within about 10 s of loading unless it is turned off before it loads)."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from serve.helpers import make_png

TOKEN = "0123456789abcdef-test-token"
SERVE_FOR_S = 15.0  # ORT 1.32's first telemetry lookup came ~9 s after it loaded (strace, this machine)
_NET_CALL = re.compile(r"^(?P<pid>\d+) +(?P<call>connect|sendto|sendmsg)\(\d+, .*sa_family=AF_INET6?,")
_LOOPBACK = re.compile(r'inet_addr\("127\.|inet_pton\(AF_INET6, "::1"|inet_pton\(AF_INET6, "::ffff:127\.')

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (.ci/setup installs it)")


def outbound_calls(trace: str) -> list[str]:
    """The lines of an strace log that send to or connect a non-loopback IPv4 / IPv6 address."""
    return [line for line in trace.splitlines() if _NET_CALL.match(line) and not _LOOPBACK.search(line)]


@pytest.fixture(scope="module")
def traced_server(tiny_engine_dir, tiny_gallery_index_dir, tmp_path_factory):
    """(url, strace log path, server log path, start time) of `serve --auth-token-file` under strace -f,
    in an environment without the offline settings (the engine must set them itself)."""
    folder = tmp_path_factory.mktemp("serve-process")
    token_file, trace, log_path = folder / "token", folder / "strace.log", folder / "server.log"
    token_file.write_text(TOKEN + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "RAY_USAGE_STATS_ENABLED")}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=bind,connect,sendto,sendmsg", "-o", str(trace),
             sys.executable, "-m", "splip_engine", "serve", "--engine", str(tiny_engine_dir), "--index",
             str(tiny_gallery_index_dir), "--port", "0", "--device", "cpu", "--auth-token-file", str(token_file)],
            stdout=log, stderr=subprocess.STDOUT, env=env)
    started = time.monotonic()
    deadline = started + 90
    while not (match := re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, f"serve did not start:\n{log_path.read_text()}"
        time.sleep(0.1)
    server_pid = int(re.search(r"Started server process \[(\d+)\]", log_path.read_text()).group(1))
    try:
        yield f"http://127.0.0.1:{match.group(1)}", trace, log_path, started
    finally:
        os.kill(server_pid, signal.SIGTERM)  # the server, not strace (strace would detach and leave it running)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            os.kill(server_pid, signal.SIGKILL)
            proc.wait()


def test_serve_process_requires_the_token_from_the_file(traced_server):
    url = traced_server[0]
    files = {"image": ("q.png", make_png(0), "image/png")}
    assert httpx.post(f"{url}/search", files=files, timeout=30).status_code == 401
    assert httpx.post(f"{url}/search", files=files, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert httpx.get(f"{url}/healthz", timeout=30).status_code == 401
    answer = httpx.post(f"{url}/search", files=files, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert answer.status_code == 200 and len(answer.json()["results"]) > 0
    assert httpx.get(f"{url}/v2/health/live", timeout=30).status_code == 200  # liveness stays open


def test_serve_process_makes_no_outbound_connection_or_lookup(traced_server):
    url, trace, log_path, started = traced_server
    headers = {"Authorization": f"Bearer {TOKEN}"}
    while time.monotonic() - started < SERVE_FOR_S:
        assert httpx.post(f"{url}/search", files={"image": ("q.png", make_png(1), "image/png")}, headers=headers,
                          timeout=30).status_code == 200
        time.sleep(1.0)
    text = trace.read_text()
    assert re.search(r'bind\(\d+, \{sa_family=AF_INET, sin_port=htons\(0\), sin_addr=inet_addr\("127\.0\.0\.1"\)',
                     text), "strace did not see the server bind its port: it is not tracing the server"
    assert outbound_calls(text) == [], f"serve reached out (strace -f):\n" + "\n".join(outbound_calls(text)[:5])


def test_outbound_calls_tells_a_dns_lookup_from_loopback():
    lookup = ('812 connect(8, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16'
              ' <unfinished ...>')
    loopback = '812 connect(9, {sa_family=AF_INET, sin_port=htons(8000), sin_addr=inet_addr("127.0.0.1")}, 16) = 0'
    assert outbound_calls(f"{lookup}\n{loopback}\n") == [lookup]
