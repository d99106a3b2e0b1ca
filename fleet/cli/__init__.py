"""The `fleet` command line (pyproject: fleet = "fleet.cli:cli"), a thin layer over the library.

cli.main assembles the group from every feature's cli.py, and those import cli.base; so this
package loads main only when `cli` or `ROLES` is asked for (PEP 562), and importing a feature's
commands first never runs into a half-built group.
"""

__all__ = ["ROLES", "cli"]


def __getattr__(name):
    if name == "cli":
        from fleet.cli.main import cli

        return cli
    if name == "ROLES":
        from fleet.web.cli import ROLES

        return ROLES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
