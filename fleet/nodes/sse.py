"""The node page's live values: a server-sent event stream (`/nodes/<id>/live`, in views.py).

Each open stream holds one of waitress's worker threads, so at most LIVE_STREAMS run at once (the
rest are told to retry later) and each ends after LIVE_SECONDS; the browser's EventSource
reconnects by itself. The web process shares nothing with the ingest worker (or with the other
web processes) but the store. On PostgreSQL a stream LISTENs for its node's change notices
(fleet/store/live.py), which every writer sends on commit whatever process or machine it runs on,
and reads the node again only when one arrives (at most every LIVE_MIN_GAP s), or after LIVE_IDLE
s without one (a node goes offline by the clock, not by a write). On SQLite it polls the store
every LIVE_POLL seconds (a few indexed reads of one node).

A stream reads with the scope of the request that opened it, on every read: a node moved to
another organisation, or a grant revoked, ends the streams that could see it with a `gone`
event at their next read (within LIVE_IDLE s on PostgreSQL, LIVE_POLL s on SQLite), not when the
stream's LIVE_SECONDS run out. The view's payload checks the same way that the login the stream
was opened with still holds (views.py: live).
"""

import json
import time
from collections.abc import Callable, Iterator

from fleet.store import live as live_store
from fleet.store.base import UnknownNode, connect
from fleet.store.scope import Scope, set_scope

LIVE_STREAMS = 4  # of waitress's 8 threads; the rest keep serving pages
LIVE_SECONDS = 60
LIVE_POLL = 1.0
LIVE_IDLE = 10.0
LIVE_MIN_GAP = 0.2  # a node writing every batch would otherwise cost a read per notice
LIVE_PING = 15.0  # s of silence after which a comment keeps proxies from closing the stream
LIVE_RETRY_MS = 3000


def stream(database, scope: Scope, node_id: str, payload: Callable, slots, seconds: float,
           idle: float) -> Iterator[str]:
    """The event stream of node node_id: payload(db, node_id) (a dict) as a `state` event when it
    changed, on a connection of its own (database) with the request's scope; one of slots (a
    semaphore) held while it runs."""
    # The slot is taken inside the generator, so a response never iterated holds none.
    if not slots.acquire(blocking=False):
        # Ends at once; EventSource retries after `retry` ms (a 503 would stop it for good).
        yield f"retry: {LIVE_RETRY_MS * 3}\n: busy\n\n"
        return
    conn = None
    try:
        conn = connect(database)
        set_scope(conn, scope)  # remember=False: the node is tested on every read
        # Listening before the first read: a change committed in between is not missed.
        changes = live_store.listen(conn, node_id)
        yield f"retry: {LIVE_RETRY_MS}\n\n"
        last, end = None, time.monotonic() + seconds
        sent = time.monotonic()
        while (now := time.monotonic()) < end:
            try:
                data = json.dumps(payload(conn, node_id), separators=(",", ":"))
            except UnknownNode:
                # Moved away or no longer shared: the page says so and stops listening (an
                # EventSource left to reconnect would be refused with a 404 anyway).
                yield "event: gone\ndata: {}\n\n"
                return
            if data != last:
                last, sent = data, now
                yield f"event: state\ndata: {data}\n\n"
            elif now - sent >= LIVE_PING:
                sent = now
                yield ": ping\n\n"  # keeps proxies from closing an idle stream
            left = max(0.0, end - time.monotonic())
            if changes is None:
                time.sleep(min(LIVE_POLL, left))
            else:
                changes.wait(min(idle, LIVE_PING, left))
                time.sleep(min(LIVE_MIN_GAP, max(0.0, end - time.monotonic())))
    finally:
        if conn is not None:
            conn.conn.close()
        slots.release()
