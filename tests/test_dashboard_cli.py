"""``hpo-slurm dashboard`` as a user runs it: the lines it prints (the URL with its token, the ssh -L
line), the token each start makes, and one-line errors with exit status 2 for what cannot be served."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.request

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from dashboard_helpers import REPO, simulate  # noqa: E402


def _start(root, *args):
    process = subprocess.Popen([sys.executable, "-m", "hpo_slurm.cli", "dashboard", "--root", str(root), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines = [process.stdout.readline() for _ in range(4)]
    return process, lines


def test_it_prints_the_url_with_a_fresh_token_and_the_ssh_line(tmp_path):
    root = tmp_path / "runs"
    simulate(root, "digits")
    tokens = []
    for _ in range(2):
        process, lines = _start(root, "--port", "0")
        try:
            url = re.search(r"open:\s+(http://127\.0\.0\.1:(\d+)/\?token=(\S+))", lines[1])
            assert url, lines
            port, token = url.group(2), url.group(3)
            tokens.append(token)
            ssh = re.search(r"ssh -N -L (\d+):127\.0\.0\.1:(\d+) \S+@\S+", lines[2])
            assert ssh and ssh.group(1) == ssh.group(2) == port, lines
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/experiments",
                                             headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(request, timeout=30) as response:
                assert [e["name"] for e in json.load(response)] == ["digits"]
        finally:
            process.terminate()
            process.wait(timeout=30)
    assert tokens[0] != tokens[1] and min(map(len, tokens)) >= 32


def test_a_taken_port_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "runs").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "hpo_slurm.cli", "dashboard", "--root", str(tmp_path / "runs"),
                               "--port", str(port)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and f"port {port}" in done.stderr and "Traceback" not in done.stderr


def test_a_missing_root_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "hpo_slurm.cli", "dashboard", "--root", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "nope" in done.stderr


def test_without_the_extra_it_says_how_to_install_it(tmp_path):
    (tmp_path / "runs").mkdir()
    hide = ("import sys; sys.modules['uvicorn'] = None; from hpo_slurm.cli import main; "
            f"sys.argv = ['hpo-slurm', 'dashboard', '--root', {str(tmp_path / 'runs')!r}]; main()")
    done = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert done.stderr == "hpo-slurm: hpo-slurm dashboard needs its web server: pip install 'hpo-slurm[dashboard]'\n"
