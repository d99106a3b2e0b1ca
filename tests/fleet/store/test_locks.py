"""Work that must run once however many workers try: upkeep rounds and rollout ticks."""

import contextlib
import time

from fleet import upkeep
from fleet.ota import rollouts
from fleet.store import upkeep as upkeep_store
from fleet.store.base import SQLITE, connect, transaction


def test_one_holder_at_a_time_then_the_next(db, settings):
    other = connect(settings.db_path)  # a second worker: its own connection, same database
    try:
        with upkeep_store.exclusive(db, "upkeep") as mine:
            assert mine
            with upkeep_store.exclusive(other, "upkeep") as theirs:
                assert not theirs
            with upkeep_store.exclusive(other, "rollouts") as theirs:
                assert theirs  # another name is another lock
        with upkeep_store.exclusive(other, "upkeep") as theirs:
            assert theirs
    finally:
        other.conn.close()


def test_an_upkeep_round_is_skipped_while_another_worker_does_one(db, settings):
    other = connect(settings.db_path)
    try:
        with upkeep_store.exclusive(other, "upkeep"):
            assert upkeep.Upkeep(settings).round(db) == {}
        assert "alerts" in upkeep.Upkeep(settings).round(db)
    finally:
        other.conn.close()


def test_a_rollout_tick_is_skipped_while_another_process_ticks(db, settings):
    other = connect(settings.db_path)
    sent = []
    try:
        with upkeep_store.exclusive(other, "rollouts"):
            assert rollouts.tick(db, lambda node, frame: sent.append(node)) == []
    finally:
        other.conn.close()


def test_a_worker_that_dies_holding_the_lock_lets_go(db, settings):
    holder = connect(settings.db_path)
    held = upkeep_store.exclusive(holder, "upkeep")
    assert held.__enter__()
    holder.conn.close()  # the worker dies mid-round: no release
    with contextlib.suppress(Exception):
        held.__exit__(None, None, None)  # (only ends the generator: its connection is gone)
    if db.dialect == SQLITE:
        # Its lock row stays until the lease ends ...
        with upkeep_store.exclusive(db, "upkeep") as mine:
            assert not mine
        with transaction(db) as conn:
            conn.execute("UPDATE locks SET until = ? WHERE name = 'upkeep'", (time.time() - 1,))
    # ... on PostgreSQL the server drops the advisory lock with the dead session.
    deadline = time.monotonic() + 10
    while True:
        with upkeep_store.exclusive(db, "upkeep") as mine:
            if mine or time.monotonic() > deadline:
                break
        time.sleep(0.05)
    assert mine
