"""Helpers for the dashboard's tests: a real dashboard served by uvicorn on a free loopback port in a
thread of the test process, raw HTTP requests to it (http.client sends a path exactly as written, so
crafted paths reach the server unnormalised), and experiments made by real searches."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

from hpo_slurm.dashboard.app import create_app
from hpo_slurm.dashboard.server import bind

TOKEN = "test-token-0123456789abcdef"
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Served:
    port: int
    token: str = TOKEN

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(self, path: str, method: str = "GET", token: Optional[str] = TOKEN,
                headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request; ``token`` goes in the
        Authorization header (None: no token)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"token {token}"
        connection.request(method, path, headers=sent)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body

    def json(self, path: str) -> Any:
        status, _, body = self.request(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)


@contextlib.contextmanager
def serving(root: Path) -> Iterator[Served]:
    """The dashboard over ``root`` on a free port, for the block."""
    import uvicorn

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(root, TOKEN, cookie=f"hpo_slurm_token_{port}")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.02)
    try:
        yield Served(port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def simulate(root: Path, name: str, config: str = "benchmarks/configs/digits.yaml",
             objective: str = "hpo_slurm.benchmarks.digits:objective", workers: int = 8) -> Path:
    """A finished search on the simulated cluster (the real driver and store), under ``root``."""
    done = subprocess.run([sys.executable, "-m", "hpo_slurm.cli", "simulate", str(REPO / config), "--objective",
                           objective, "--root", str(root), "--name", name, "--workers", str(workers)],
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return root / name


def copy_quadratic(target: Path) -> Path:
    example = target / "quadratic"
    shutil.copytree(REPO / "examples" / "quadratic", example)
    return example
