"""`python -m provisioning`: the technician's host tools (make image, make flash, ...)."""

from .cli import cli

cli()
