"""The Unix-port supervisor stops when it is told to, even while its node talks.

Python 3.11's asyncio.wait_for returns the awaited result and drops a cancel that lands in the
same loop turn (python/cpython#86296). The supervisor read the node's output with it, so a
cancelled UnixNode.run() could read on for ever: stop 25's CI hung 300 s in
test_sockets_are_closed_across_reconnects, its node process still running. And once cancelled,
run() reaped the process with Process.wait(), which on 3.11 waits for the end of an output pipe
nobody read any more: a node that had printed 64 KB more than was read was never reaped.
"""

import asyncio
import stat

import pytest
from polylink_host import unixsim
from polylink_host.unixhal import CTRL


def test_next_line_keeps_a_cancel_that_lands_with_the_line():
    async def scenario():
        stream = asyncio.StreamReader()

        async def read_for_ever():
            while True:
                await unixsim.next_line(stream, 0.5)

        reader = asyncio.create_task(read_for_ever())
        await asyncio.sleep(0.01)
        stream.feed_data(b"a line\n")  # the read's task finishes in the next turn...
        reader.cancel()  # ...which is also when this cancel reaches the reader
        done, _ = await asyncio.wait([reader], timeout=2)
        return reader if done else None

    reader = asyncio.run(scenario())
    assert reader is not None, "the cancel was lost: the reader went on reading"
    assert reader.cancelled()


@pytest.fixture
def chatty_binary(tmp_path):
    """A stand-in for `micropython` that starts a watchdog and feeds it as fast as it can: some
    line is always arriving when the supervisor is cancelled."""
    path = tmp_path / "chatty"
    path.write_text(f"#!/bin/sh\necho '{CTRL}wdt 5000'\nwhile :; do echo '{CTRL}feed'; done\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_cancelled_node_stops_and_its_process_is_reaped_while_it_talks(tmp_path,
                                                                          chatty_binary):
    async def scenario():
        lost = []
        for attempt in range(40):
            node = unixsim.UnixNode(f"n{attempt}", tmp_path / f"n{attempt}", tmp_path,
                                    chatty_binary, unixsim.DEFAULT_HEAPSIZE)
            task = asyncio.create_task(node.run())
            await asyncio.wait_for(node.started.wait(), 10)
            for _ in range(attempt % 7):  # cancel at a different loop turn each time
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            if not done:
                lost.append(attempt)
                for _ in range(20):  # cancel until one takes, so the next attempt starts clean
                    task.cancel()
                    if (await asyncio.wait([task], timeout=1))[0]:
                        break
                continue
            assert node.proc is not None and node.proc.returncode is not None, \
                "cancelled, but its process was not reaped"
        return lost

    lost = asyncio.run(scenario())
    assert lost == [], f"run() went on past its cancel in attempts {lost} of 40"


def test_a_second_cancel_still_stops_and_reaps_every_node(tmp_path, chatty_binary):
    """Ctrl-C twice: the second cancel cuts the nodes' own reaping short, and unixsim.run()'s
    last resort must reap them without waiting for an output pipe nobody reads."""
    async def scenario(turns):
        nodes = [unixsim.UnixNode(f"n{i}", tmp_path / f"{turns}-{i}", tmp_path, chatty_binary,
                                  unixsim.DEFAULT_HEAPSIZE) for i in range(3)]
        task = asyncio.create_task(unixsim.run(nodes))
        for node in nodes:
            await asyncio.wait_for(node.started.wait(), 10)
        task.cancel()
        for _ in range(turns):  # the second cancel at a different loop turn each time
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=5)
        if not done:  # let the loop end: kill and reap what the hung run() left
            for n in nodes:
                n.kill()
                await n.proc.communicate()
            await asyncio.wait([task], timeout=5)
        return [n.proc.returncode for n in nodes], bool(done)

    hung = []
    for attempt in range(16):
        turns = attempt % 8
        codes, stopped = asyncio.run(scenario(turns))
        assert None not in codes, f"a node's process was not reaped ({turns} turns)"
        if not stopped:
            hung.append(turns)
    assert hung == [], f"unixsim.run() hung when cancelled again {hung} loop turns after a cancel"
