"""``hpo-slurm dashboard``: the command line of ``hpo_slurm.dashboard`` (a read-only web UI)."""

from __future__ import annotations

import click

from hpo_slurm.cli.options import resolve_root, root_option
from hpo_slurm.core.errors import UserError

NEEDS_EXTRA = "hpo-slurm dashboard needs its web server: pip install 'hpo-slurm[dashboard]'"


def register(cli: click.Group) -> None:
    """Add the ``dashboard`` command to ``cli``."""

    @cli.command("dashboard")
    @root_option
    @click.option("--port", type=click.IntRange(0, 65535), default=None,
                  help="Port to listen on (default: 8765, or the next free one; 0: any free port).")
    @click.option("--host", default="127.0.0.1", show_default=True,
                  help="Address to listen on. Keep the default on a shared login node and reach it through ssh -L.")
    def dashboard_command(root, port, host) -> None:
        """Serve a live, read-only web UI over every experiment under the root.

        Prints the URL to open, with its token (every request needs it), and the ssh -L line that
        reaches it from a laptop.

        \b
        Example:
          hpo-slurm dashboard
          ssh -N -L 8765:127.0.0.1:8765 me@login1   # on the laptop, then open the printed URL
        """
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise UserError(NEEDS_EXTRA) from None
        from hpo_slurm.dashboard.server import serve

        root_path = resolve_root(root)
        if not root_path.is_dir():
            raise UserError(f"--root {root_path}: no such folder (no experiments yet?)")
        serve(root_path, host, port, say=lambda line: click.echo(line, err=False))
