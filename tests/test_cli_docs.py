"""Every command on `hpo-slurm` is documented twice: its --help has an example, and the README has a
section whose heading names it."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from hpo_slurm.cli import results as cli_results
from hpo_slurm.cli import cli
from results_helpers import invoke

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
HEADINGS = re.findall(r"^#{2,4} (.+)$", README, re.M)
COMMANDS = sorted(cli.commands)


def test_the_command_list_is_not_empty():
    assert {"plot", "report", "best", "export", "tensorboard", "status"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example(name):
    done = invoke(name, "--help")
    assert done.exit_code == 0, done.output
    assert re.search(r"^\s*Example", done.stdout, re.M), f"`hpo-slurm {name} --help` shows no example"
    example = done.stdout.split("Example", 1)[1]
    assert f"hpo-slurm {name}" in example, f"the example of {name} does not run hpo-slurm {name}"


@pytest.mark.parametrize("name", COMMANDS)
def test_readme_has_a_section(name):
    assert any(re.search(rf"\bhpo-slurm {re.escape(name)}\b", heading) for heading in HEADINGS), \
        f"README.md has no heading containing `hpo-slurm {name}`"


@pytest.mark.parametrize("name", sorted(c.name for c in cli_results.COMMANDS))
def test_readme_shows_every_option(name):
    """Each option of the results commands appears in its README heading."""
    command: click.Command = cli.commands[name]
    heading = next(h for h in HEADINGS if re.search(rf"\bhpo-slurm {re.escape(name)}\b", h))
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert any(opt in heading for opt in param.opts), f"{name}: {param.opts[0]} missing from `{heading}`"
