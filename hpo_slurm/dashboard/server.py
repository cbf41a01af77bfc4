"""Serving the dashboard: a socket bound before anything is printed, a fresh token, the lines that
say how to open it (here and from a laptop through ``ssh -L``), then uvicorn until Ctrl-C.

Binds 127.0.0.1 unless told otherwise: other users of a shared login node can reach a port on the
loopback too, which is why every request also needs the token.
"""

from __future__ import annotations

import errno
import getpass
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from hpo_slurm.core.errors import UserError

DEFAULT_PORT = 8765
PORT_TRIES = 50
LOOPBACK = ("127.0.0.1", "localhost", "::1")  # with the default port, the next ones are tried while they are taken (as Jupyter does)


@dataclass(frozen=True)
class Address:
    """Where the dashboard listens, and the token it wants."""

    host: str
    port: int
    token: str

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "::") else host
        return f"http://{shown}:{self.port}/?token={self.token}"

    def ssh_line(self, login_host: Optional[str] = None, user: Optional[str] = None) -> str:
        """The command that forwards the port from a laptop: the same URL then opens there."""
        remote = "127.0.0.1" if self.host in ("0.0.0.0", "::", "localhost") else self.host
        remote = f"[{remote}]" if ":" in remote else remote
        login = login_host or socket.gethostname()
        who = user or getpass.getuser()
        return f"ssh -N -L {self.port}:{remote}:{self.port} {who}@{login}"


def bind(host: str, port: Optional[int]) -> socket.socket:
    """A listening socket on ``host``: on ``port``, or on the first free one from DEFAULT_PORT when
    None (0 asks the system for any). A UserError naming the port when it cannot be had."""
    if not host.strip():
        raise UserError("--host: expected an address to listen on, such as 127.0.0.1, got ''")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    candidates = [port] if port is not None else range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES)
    last: Optional[OSError] = None
    for candidate in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            last = exc
            if exc.errno != errno.EADDRINUSE:
                break
            continue
        sock.listen(128)
        return sock
    where = f"port {port}" if port is not None else f"ports {DEFAULT_PORT}-{DEFAULT_PORT + PORT_TRIES - 1}"
    reason = last.strerror if last and last.strerror else str(last)
    raise UserError(f"--host {host} --port: cannot listen on {where} ({reason})")


def serve(root: Path, host: str, port: Optional[int], say: Callable[[str], None],
          token: Optional[str] = None) -> None:
    """Serve the experiments under ``root`` until interrupted. ``say`` prints the lines a user needs."""
    import uvicorn

    from hpo_slurm.dashboard.app import create_app

    sock = bind(host, port)
    address = Address(host, sock.getsockname()[1], token or secrets.token_urlsafe(24))
    app = create_app(root, address.token, cookie=f"hpo_slurm_token_{address.port}")
    say(f"hpo-slurm dashboard: the experiments in {Path(root).absolute()}")
    if host not in LOOPBACK:
        say(f"  warning: listening on {host}, reachable from other machines; only the token keeps them out")
    say(f"  open:              {address.url}")
    say(f"  from your laptop:  {address.ssh_line()}   then open the same URL")
    say("  (read-only; the token is printed only here. Ctrl-C stops it.)")
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
