"""The `fleet` command line (pyproject: fleet = "fleet.cli:cli"), a thin layer over the library."""

from fleet.cli.main import cli
from fleet.web.cli import ROLES

__all__ = ["ROLES", "cli"]
