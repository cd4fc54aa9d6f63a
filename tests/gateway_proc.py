"""A gateway alone (uvicorn, a real process) over a real Redis database, for what it answers before any worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from echovids.harness import ROOT, free_port


@contextmanager
def gateway(data_dir: Path, redis_url: str, **settings: str) -> Iterator[str]:
    """`uvicorn services.gateway.app:app` on a free port with these ECHOVIDS_* settings; yields its URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECHOVIDS_")}
    env.update(ECHOVIDS_DATA_DIR=str(data_dir), ECHOVIDS_REDIS_URL=redis_url, PYTHONPATH=str(ROOT), **settings)
    log = (data_dir.parent / f"gateway-{port}.log").open("wb")
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "services.gateway.app:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (data_dir.parent / f"gateway-{port}.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway not up in 60 s"
            time.sleep(0.2)
        yield url
        assert proc.poll() is None, "the gateway died"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def raw_request(url: str, head: str, body: bytes = b"", timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send a request's head (and the start of a body) on a bare socket and read the answer that comes back.

    httpx would insist on sending the body it declared before reading; a bare socket shows that the answer came
    while the body was still owed."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, rest
