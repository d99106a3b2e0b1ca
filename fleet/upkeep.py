"""Upkeep: the fleet's periodic work that belongs to no request.

One round evaluates alerts (db.evaluate_alerts), rewrites the broker's logins when a claim token
ran out of time (brokerauth.sync: the broker refuses it from then on), and once an hour deletes
what is older than its retention: STATUS history (STATUS_LOG_DAYS), readings and receptions
(READINGS_DAYS), events (EVENTS_DAYS), bad frames (BAD_FRAMES_DAYS); every round it forgets the
login attempts whose window ended. Each task records when it ran in the `upkeep` table, which
pages read to say how fresh the alerts are: a GET never writes.

`fleet run` runs it as the supervised worker process `fleet upkeep` (restarted when it exits, like
the ingest workers). Without `fleet run`, `fleet upkeep --once` or `fleet alerts check` from cron
do the same work.
"""

import json
import threading
import time

from fleet.broker import auth as brokerauth
from fleet.broker import sysstats
from fleet.settings import SettingsError, node_tls_from_env
from fleet.store import alerts as alert_store
from fleet.store import identity as identity_store
from fleet.store import upkeep as upkeep_store
from fleet.store import users as user_store
from fleet.store.migrate import open_db
from fleet.tls import certs

PRUNE_EVERY = 3600.0  # s between retention passes; they are cheap but need not run often
# A token is dropped just after it expires, never just before: sleep this much past its time.
_EXPIRY_SLACK = 0.5
# Evaluations older than this many upkeep intervals (or never) are shown as a warning.
STALE_ROUNDS = 4


def alerts_freshness(db, settings, now=None) -> dict:
    """{"at": time of the last alert evaluation or None, "stale": True if it is overdue}."""
    now = time.time() if now is None else now
    at = upkeep_store.upkeep_state(db).get("alerts", {}).get("at")
    return {"at": at,
            "stale": at is None or now - at > STALE_ROUNDS * max(settings.upkeep_every, 30.0)}


class Upkeep:
    """The periodic tasks; run() loops until stopped, round() does one pass (tests, --once)."""

    def __init__(self, settings, every: float | None = None, broker: bool = False,
                 prune_every: float = PRUNE_EVERY):
        self.settings = settings
        self.every = settings.upkeep_every if every is None else every
        self.broker = broker  # True when the broker's files are ours (`fleet run`'s mosquitto)
        self.prune_every = prune_every
        self.next_prune = 0.0
        self.rounds = 0
        self.errors = 0

    def round(self, db, now: float | None = None) -> dict:
        """Do every task that is due once; return what each did ({} if another worker is at it).

        Any number of upkeep workers may run (one per machine): a database lock lets one of
        them do a round at a time, and the time of the last prune is read from the store, so
        retention runs once an hour whichever worker's turn it is.
        """
        with upkeep_store.exclusive(db, "upkeep") as mine:
            if not mine:
                return {}
            return self._round(db, time.time() if now is None else now)

    def _round(self, db, now: float) -> dict:
        done = {}
        if self.broker:
            # First: the read waits up to seconds for the broker, and the log line of a round
            # should follow its alerts closely.
            host, port, user, password = self.settings.mqtt_login("ingest")
            figures = sysstats.read(host, port, user, password)
            if figures:  # for /metrics (fleet/web/metrics.py): the broker's queue depth
                upkeep_store.mark_upkeep(db, "broker_sys", now, figures)
                done["broker_sys"] = figures
        made = upkeep_store.add_partitions(db, now)  # PostgreSQL's readings: the next days
        if made:
            done["partitions"] = made
        # Login attempts whose window ended (fleet/web/auth.py): a small table, cleared each round.
        forgotten = user_store.prune_login_attempts(db, now)
        if forgotten:
            done["login_attempts"] = forgotten
        opened = alert_store.evaluate_alerts(db, now)
        opened["certificate"] = alert_store.sync_certificate_alerts(db, self._certificates_due())
        upkeep_store.mark_upkeep(db, "alerts", now, opened)
        done["alerts"] = opened
        if self.broker:
            # Rewrites only what changed; a token past its expiry leaves the claim listener here.
            done["broker"] = brokerauth.sync(db, self.settings.broker_dir)
            if done["broker"]:
                upkeep_store.mark_upkeep(db, "broker", now)
        kept = {table: days for table, days in self.settings.retention().items() if days}
        if self.rounds:
            # After its first round a worker prunes when the store says one is due, whichever
            # worker did the last, not on its own clock: N workers still prune once an hour.
            last_prune = upkeep_store.upkeep_state(db).get("prune", {}).get("at")
            if last_prune is not None:
                self.next_prune = max(self.next_prune, last_prune + self.prune_every)
        if kept and now >= self.next_prune:
            pruned = {table: upkeep_store.prune_old(db, table, now - days * 86400)
                      for table, days in kept.items()}
            upkeep_store.mark_upkeep(db, "prune", now, {**pruned, "days": kept})
            done["prune"] = pruned
            self.next_prune = now + self.prune_every
        self.rounds += 1
        return done

    def _certificates_due(self) -> dict[str, str]:
        """{role: detail} of the TLS certificates due for renewal (fleet/tls/certs.py)."""
        try:
            return certs.expiring(node_tls_from_env(self.settings.data_dir).tls_dir)
        except (certs.TLSError, SettingsError) as e:
            return {"unreadable": f"the TLS certificates cannot be read: {e}"}

    def wait(self, db, now: float | None = None) -> float:
        """Seconds until the next round: `every`, or sooner when a claim token expires before."""
        now = time.time() if now is None else now
        wait = self.every
        if self.broker:
            expiry = identity_store.next_claim_token_expiry(db, now)
            if expiry is not None:
                wait = min(wait, expiry - now + _EXPIRY_SLACK)
        return max(wait, 0.05)

    def run(self, stopping: threading.Event, log=print) -> None:
        """Rounds until stopping is set; a failing round is logged and tried again next time."""
        db = open_db(self.settings.db_path)
        try:
            while not stopping.is_set():
                try:
                    done = self.round(db)
                    if (done.get("broker") or any(done.get("prune", {}).values())
                            or any(done.get("alerts", {}).values())):
                        log("upkeep: " + json.dumps(done, separators=(",", ":")))
                    wait = self.wait(db)
                except Exception as e:  # noqa: BLE001 - a bad round must not end the periodic work
                    self.errors += 1
                    log(f"upkeep: round failed: {type(e).__name__}: {e}")
                    wait = self.every
                stopping.wait(wait)
        finally:
            db.conn.close()
