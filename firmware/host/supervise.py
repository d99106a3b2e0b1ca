"""The loop both simulators share (sim.py: CPython nodes in this process; unixsim.py: one
MicroPython process per node): run the nodes' tasks for a while, report, then stop them all."""

import asyncio
from collections.abc import Callable


async def supervise(tasks: list[asyncio.Task], report: Callable[[], str],
                    duration: float | None = None, report_s: float = 0) -> None:
    """Let tasks run for duration seconds (None: until cancelled), printing report() every
    report_s seconds (0: never) and once at the end; then cancel them and wait for each."""
    try:
        if duration is not None:
            await asyncio.sleep(duration)
        else:
            while True:
                await asyncio.sleep(report_s or 3600)
                if report_s:
                    print(report(), flush=True)
    finally:
        print(report(), flush=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
