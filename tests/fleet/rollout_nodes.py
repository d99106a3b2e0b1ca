"""Simulated nodes under a rollout, shared by the rollout, UI and OTA bench tests.

The nodes here are protocol-level simulations: each decodes the real OTA_DOWN offer with the codec
and answers with the OTA_UP and STATUS frames the firmware agent sends, stored through the
ingest's batch writer. Here, in tests/fleet/ (on sys.path for every test below it), rather than
in one test module that the others import by a name only its own folder provides.
"""

import time

from polylink import proto

from fleet.store import nodes as node_store
from fleet.store import ota as ota_store
from fleet.store import telemetry as telemetry_store
from fleet.store.base import transaction

STAGES = [{"percent": 1, "soak": 0}, {"percent": 10, "soak": 0}, {"percent": 50, "soak": 0},
          {"percent": 100, "soak": 0}]


class Nodes:
    """Simulated nodes answering offers: good ones confirm, bad releases roll back."""

    def __init__(self, db, ids, bad=(), offline=(), runtimes=None, stale=()):
        self.db = db
        self.bad = set(bad)
        self.offline = set(offline)
        # release -> the MicroPython of its runtime image; nodes in `stale` keep the old one
        # (as if their agent confirmed without the runtime switch) and say so after boot.
        self.runtimes = runtimes or {}
        self.stale = set(stale)
        self.offers = {}  # node -> number of offers received
        self.seq = {}
        self.outbox = []  # frames to store on the next deliver()
        for i in ids:
            node_store.enrol_node(db, i, board="ESP32_GENERIC", provider="mqtt",
                                  tags=["pilot"] if i.endswith("7") else [])
        now = time.time()
        with transaction(db) as conn:
            conn.executemany("UPDATE nodes SET firmware_version = '0.1.0', online = ?,"
                             " last_seen = ? WHERE id = ?",
                             [(0 if i in self.offline else 1, now, i) for i in ids])

    def send(self, node, frame):
        mtype, _seq, _ts, body = proto.decode(frame)
        assert mtype == proto.OTA_DOWN and body["op"] == 1
        assert node not in self.offline, "an offline node cannot receive an offer"
        self.offers[node] = self.offers.get(node, 0) + 1
        v, rid = body["version"], body["rid"]
        for state in (1, 2, 3, 4):  # offered, downloading, verified, rebooting
            self._up(node, proto.OTA_UP, {"state": state, "version": v, "rid": rid,
                                          **({"progress": 100} if state == 2 else {})})
        if v in self.bad:
            # The new app crash-loops; boot.py reverts; the old version reports the rollback.
            self._up(node, proto.STATUS, {"fw": "0.1.0", "uptime": 3, "reset": 3})
            self._up(node, proto.OTA_UP, {"state": 7, "version": v, "rid": rid, "reason": 11})
        else:
            mpy = "1.24.1" if node in self.stale else self.runtimes.get(v, "1.24.1")
            self._up(node, proto.STATUS, {"fw": v, "uptime": 5, "reset": 5, "micropython": mpy})
            self._up(node, proto.OTA_UP, {"state": 5, "version": v, "rid": rid})

    def _up(self, node, mtype, body):
        s = self.seq[node] = self.seq.get(node, 0) + 1
        self.outbox.append((node, s, mtype, time.time(), None, "mqtt", body))

    def deliver(self):
        """What the ingest worker does with the nodes' uplinks."""
        b = telemetry_store.Batch()
        b.frames = self.outbox
        self.outbox = []
        telemetry_store.store_batch(self.db, b, proto.TELEMETRY, proto.STATUS, proto.EVENT,
                                    proto.RESULT, proto.OTA_UP)

    def come_online(self, node):
        self.offline.discard(node)
        with transaction(self.db) as conn:
            conn.execute("UPDATE nodes SET online = 1, last_seen = ? WHERE id = ?",
                         (time.time(), node))


def _release(db, version, runtime=None):
    m = {"version": version, "key": "k1", "boards": ["ESP32_GENERIC"], "micropython": "1.22.0",
         "files": [{"path": "polylink/node.mpy", "sha256": "0" * 64, "size": 1}]}
    if runtime:
        m["runtime"] = {"sha256": "1" * 64, "size": 1534256, "micropython": runtime,
                        "chip": "esp32"}
    ota_store.add_release(db, m, "0" * 64)
