"""``python3 -m determined.launch.*`` on hpo-slurm.

hpo-slurm has already started one process per rank (``resources.slots_per_trial``), each with
torch.distributed's ``env://`` variables, before the entrypoint runs. So:

``determined.launch.torch_distributed [--] SCRIPT...``
    Sets the variables torchrun would that hpo-slurm does not (GROUP_RANK, GROUP_WORLD_SIZE, ROLE_RANK,
    ROLE_WORLD_SIZE; for a trial of one process also RANK=0, WORLD_SIZE=1, LOCAL_RANK=0,
    LOCAL_WORLD_SIZE=1, NODE_RANK=0, MASTER_ADDR=127.0.0.1 and a free MASTER_PORT), then replaces
    itself by SCRIPT (``os.execvp``, the argument list as given: no shell).
``determined.launch.torch_distributed --trial module:Class``
    Imports the class from the context folder and runs it with
    ``hpo_slurm.compat.pytorch.harness.run_trial_class``, in this process.
``determined.launch.torch_distributed OVERRIDES... -- SCRIPT...``
    torchrun's overrides do not apply (hpo-slurm places the ranks): ``Unsupported``.
``determined.launch.wrap_rank [--no-redirect-stdio] RANK SCRIPT...``
    Runs SCRIPT in place (hpo-slurm keeps each rank's output apart already).
``determined.launch.horovod``, ``deepspeed``, ``tensorflow``
    ``Unsupported``.

Every ``Unsupported`` ends the process with its one line on stderr and exit status 2 (a usage
error), before anything runs.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from typing import Callable, Dict, List, Mapping, NoReturn, Optional, Tuple

from hpo_slurm.compat.errors import Unsupported

USAGE_STATUS = 2


def torch_distributed_main(argv: Optional[List[str]] = None) -> None:
    """``python3 -m determined.launch.torch_distributed`` (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        trial, script = parse_torch_distributed(args)
    except Unsupported as exc:
        fail(exc)
    if trial is not None:
        run_trial(trial)
        return
    os.environ.update(torchrun_environment(os.environ, free_port))
    exec_script(script)


def exec_script(script: List[str]) -> NoReturn:
    """Replace this process with ``script`` (an argument list, run without a shell); a program that
    cannot be started ends the process with one line naming it."""
    try:
        os.execvp(script[0], script)
    except OSError as exc:
        print(f"cannot start {script[0]!r}: {exc.strerror}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_STATUS) from None


def parse_torch_distributed(args: List[str]) -> Tuple[Optional[str], List[str]]:
    """(``--trial``'s value or None, the script's argument list); ``Unsupported`` for what cannot run."""
    # torchrun's own options come before a `--`; a `--` among the script's arguments is the script's
    split = args.index("--") if "--" in args else -1
    if split >= 0 and all(arg.startswith("-") for arg in args[:split]):
        overrides, args = args[:split], args[split + 1:]
        if overrides:
            raise Unsupported(f"determined.launch.torch_distributed overrides ({' '.join(overrides)})",
                              "hpo-slurm places the ranks: set resources.slots_per_trial")
    if args and (args[0] == "--trial" or args[0].startswith("--trial=")):
        value = args[0].split("=", 1)[1] if "=" in args[0] else (args[1] if len(args) > 1 else "")
        rest = args[1:] if "=" in args[0] else args[2:]
        if not value or rest:
            raise Unsupported(f"determined.launch.torch_distributed {' '.join(args)}",
                              "give --trial module:Class alone, or a script")
        return value, []
    if not args:
        raise Unsupported("determined.launch.torch_distributed without a script",
                          "give the script to run: python3 -m determined.launch.torch_distributed python3 train.py")
    return None, args


def torchrun_environment(environ: Mapping[str, str], port: Callable[[], int]) -> Dict[str, str]:
    """The variables torchrun sets that ``environ`` lacks (see the module docstring)."""
    added: Dict[str, str] = {}
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        added.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", NODE_RANK="0")
        if "MASTER_ADDR" not in environ:
            added.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port()))
    merged = {**environ, **added}
    size, local_size = int(merged["WORLD_SIZE"]), int(merged.get("LOCAL_WORLD_SIZE", "1"))
    defaults = {"GROUP_RANK": merged.get("NODE_RANK", "0"), "GROUP_WORLD_SIZE": str(max(1, size // max(1, local_size))),
                "ROLE_RANK": merged["RANK"], "ROLE_WORLD_SIZE": merged["WORLD_SIZE"]}
    added.update({key: value for key, value in defaults.items() if key not in environ})
    return added


def run_trial(target: str) -> None:
    """Import ``module:Class`` (the context folder first on the path) and run the class."""
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        fail(Unsupported(f"--trial {target}", "name the class as module:Class"))
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        print(f"--trial {target}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(USAGE_STATUS) from None
    harness = importlib.import_module("hpo_slurm.compat.pytorch.harness")
    harness.run_trial_class(cls)


def wrap_rank_main(argv: Optional[List[str]] = None) -> None:
    """``python3 -m determined.launch.wrap_rank [--no-redirect-stdio] RANK SCRIPT...``: runs SCRIPT."""
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--no-redirect-stdio"]
    script = args[1:]
    if script and script[0] == "--":
        script = script[1:]
    if not script:
        fail(Unsupported("determined.launch.wrap_rank without a script", "give RANK then the command to run"))
    exec_script(script)


def unsupported_main(launcher: str) -> NoReturn:
    """``python3 -m determined.launch.<launcher>`` for a launcher hpo-slurm does not offer."""
    fail(Unsupported(f"determined.launch.{launcher}",
                     "use python3 -m determined.launch.torch_distributed (hpo-slurm starts one process per rank)"))


def fail(error: Unsupported) -> NoReturn:
    """End the process: the error's one line on stderr, status 2."""
    print(str(error), file=sys.stderr, flush=True)
    raise SystemExit(USAGE_STATUS)


def free_port() -> int:
    """A TCP port free on this host now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])
