"""Bulk export of readings as CSV or SenML JSON, produced as a stream of text chunks.

Nothing here holds more than one chunk: rows come from telemetry_store.iter_readings (batched
keyset queries) and each chunk is written and handed on before the next batch is read, so an
export of years of a whole city's readings costs the same memory as one of an hour. The API
(GET /api/v1/export), the node list's download and `fleet node export` all use stream().
"""

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from fleet.nodes import senml
from fleet.store import base as store_base
from fleet.store import telemetry as telemetry_store
from fleet.store.scope import set_scope

FORMATS = {"csv": "text/csv; charset=utf-8", "senml": "application/senml+json"}
SUFFIX = {"csv": "csv", "senml": "senml.json"}
CSV_HEADER = ("node_id", "time", "quantity", "unit", "value")
ROWS_PER_CHUNK = 2000


class ExportError(ValueError):
    """An export cannot be made as asked (unknown format)."""


def parse_time(name: str, raw: str | None, end_of_day: bool = False) -> float | None:
    """Unix seconds or ISO 8601 (a date alone: its start, or with end_of_day its last moment)
    as unix seconds; None if raw is empty; ExportError saying what was wrong."""
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise ExportError(f"{name}={raw!r}: expected unix seconds or ISO 8601 "
                              "(2026-01-31T12:00:00Z or 2026-01-31)") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        value = dt.timestamp()
        if end_of_day and len(raw) == 10:  # a date: up to its end, as a person means it
            value += 86400 - 0.001
    if not math.isfinite(value) or value < 0:
        raise ExportError(f"{name}={raw!r}: must be a non-negative finite number")
    return value


def _iso(t: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z (the API's form), without a datetime per row."""
    ms = round(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


class _Names(dict):
    """(qid, inst) -> (SenML name, unit), looked up once per quantity, not once per row."""

    def __missing__(self, key):
        value = self[key] = senml.name_and_unit(*key)
        return value


def csv_chunks(rows: Iterable[tuple]) -> Iterator[str]:
    """CSV text (header first) of (node_id, t, qid, inst, value) rows, ROWS_PER_CHUNK a chunk."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_HEADER)
    n = 0
    names = _Names()
    for node_id, t, qid, inst, value in rows:
        name, unit = names[qid, inst]
        out.writerow((node_id, _iso(t), name, unit or "", senml.number(qid, value)))
        n += 1
        if n % ROWS_PER_CHUNK == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def senml_chunks(rows: Iterable[tuple]) -> Iterator[str]:
    """One SenML pack (RFC 8428, JSON) of the rows: bn on each node's first record, absolute t."""
    parts = ["["]
    node = None
    n = 0
    names = _Names()
    for node_id, t, qid, inst, value in rows:
        name, unit = names[qid, inst]
        rec: dict = {}
        if node_id != node:
            node = node_id
            rec["bn"] = senml.BASE_NAME.format(node=node_id)
        rec["n"] = name
        if unit is not None:
            rec["u"] = unit
        rec["v"] = senml.number(qid, value)
        rec["t"] = t
        parts.append(("," if n else "") + json.dumps(rec, separators=(",", ":")))
        n += 1
        if n % ROWS_PER_CHUNK == 0:
            yield "".join(parts)
            parts = []
    parts.append("]")
    yield "".join(parts)


def stream(db, node_ids: list[str], since=None, until=None, fmt="csv") -> Iterator[str]:
    """The export of the nodes' readings in [since, until] as text chunks in format fmt."""
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} must be one of {', '.join(FORMATS)}")
    rows = telemetry_store.iter_readings(db, node_ids, since, until, batch=ROWS_PER_CHUNK)
    return csv_chunks(rows) if fmt == "csv" else senml_chunks(rows)


def stream_from(database, scope, node_ids: list[str], since=None, until=None, fmt="csv"):
    """stream() on a connection of its own, for a web response read after the request ends.

    The request's connection is closed at teardown, before the body is sent; a client that
    goes away closes this generator, and with it the connection. It reads with the request's
    scope, so each node is tested again when its turn comes (telemetry_store.iter_readings).
    """
    db = store_base.connect(database)
    set_scope(db, scope)
    try:
        yield from stream(db, node_ids, since, until, fmt)
    finally:
        store_base.close(db)


def filename(fmt: str, since=None, until=None) -> str:
    """polylink-readings[-from][-to].csv"""
    stamp = ""
    for t in (since, until):
        try:
            stamp += f"-{datetime.fromtimestamp(t, UTC):%Y%m%dT%H%M%SZ}" if t is not None else ""
        except (OverflowError, ValueError, OSError):
            stamp += "-later"  # a time past year 9999 has no calendar date
    return f"polylink-readings{stamp}.{SUFFIX[fmt]}"
