"""MicroPython's `micropython` module for the host port (CPython: the fleet, the simulator, tests).

Installed as the top-level `micropython` on the host only (pyproject.toml); device images and OTA
releases take firmware/polylink/, main.py and boot.py, never firmware/host/, so on a node the
built-in module is the one imported. Only what the firmware uses: `const`, which on MicroPython
folds the value into the bytecode and here is the identity.
"""


def const(x):
    return x
