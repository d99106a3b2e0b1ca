"""`python -m fleet.cli`: the `fleet` command, as the workers `fleet run` starts are launched."""

from fleet.cli import cli

cli()
