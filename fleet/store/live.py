"""Change notices for the node page's live stream, across processes (PostgreSQL LISTEN/NOTIFY).

A write that changes what a node's page shows (its frames, status, latest values, commands)
calls announce() inside its transaction; PostgreSQL delivers the notice to every listening
connection, in any process on any machine, when that transaction commits (and never if it rolls
back). A web process's stream for the node waits on it instead of polling. SQLite has no such
thing, and its writers and readers share one machine anyway: there announce() does nothing and
listen() returns None, so the stream polls the store.
"""

from .base import POSTGRESQL

# One channel per node, so a stream wakes only for its own node: "node:" + the node id
# ([a-z0-9-]{1,32}, well inside the 63 bytes of a channel name).
CHANNEL_PREFIX = "node:"


def channel(node_id: str) -> str:
    return CHANNEL_PREFIX + node_id


def announce(conn, node_ids) -> None:
    """Tell the node pages of node_ids that something changed, once this transaction commits."""
    if conn.dialect != POSTGRESQL or not node_ids:
        return
    # One statement for the whole batch; PostgreSQL folds repeats of a notice in a transaction.
    # Not fetched: the ingest sends it in pipeline mode, and the notices go out whether read or not.
    conn.execute(f"SELECT count(pg_notify('{CHANNEL_PREFIX}' || n, '')) FROM unnest(?::text[]) n",
                 (sorted(node_ids),))


class Listener:
    """A connection's subscription to one node's notices (PostgreSQL only)."""

    def __init__(self, db, node_id: str):
        from psycopg import sql

        self.raw = db.conn.raw
        # An identifier, quoted by psycopg: the channel holds ':' and '-'.
        self.raw.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(node_id))))

    def wait(self, timeout: float) -> bool:
        """True once a notice arrives, False after timeout s without one."""
        for _notice in self.raw.notifies(timeout=timeout, stop_after=1):
            return True
        return False


def listen(db, node_id: str) -> Listener | None:
    """A Listener for node_id's notices on this connection, or None where there are none."""
    if db.dialect != POSTGRESQL:
        return None
    return Listener(db, node_id)
