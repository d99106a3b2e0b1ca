"""LoRaWAN providers: their settings, the transport identities nodes have on them, radio
metadata of each reception, and the downlinks (and ACKs) counted against their daily budget."""

from .base import BadFilter, DuplicateName, first, transaction
from .scope import scope_of
from .telemetry import time_buckets

# Where a provider's password is sent: the stored one may only ever go there.
DESTINATION = ("host", "port", "tls")


def save_provider(db, row: dict, keep_secret: bool) -> bool:
    """Insert or replace a provider by name; keep_secret keeps the stored password.

    Returns False, and saves nothing, when keep_secret would send a stored password to another
    host, port or TLS setting than the one it was given for (it must be given again).
    """
    scope = scope_of(db)
    with transaction(db) as conn:
        if conn.execute(f"SELECT 1 FROM providers WHERE name = ? AND NOT ({scope.owns()})",
                        (row["name"],)).fetchone():
            raise DuplicateName(f"provider name {row['name']!r} is taken: choose another")
        old = conn.execute(f"SELECT secret, {', '.join(DESTINATION)} FROM providers WHERE"
                           " name = ?", (row["name"],)).fetchone()
        if old is not None and keep_secret:
            if old[0] is not None and tuple(old[1:]) != tuple(row[k] for k in DESTINATION):
                return False
            row = dict(row, secret=old[0])  # editing without a new password keeps the old one
        conn.execute("DELETE FROM providers WHERE name = ?", (row["name"],))
        row = dict(row, org_id=scope.org_id)
        cols = ", ".join(row)
        conn.execute(f"INSERT INTO providers ({cols}) VALUES ({', '.join('?' * len(row))})",
                     list(row.values()))
    return True


def list_providers(db) -> list[dict]:
    """Every provider's row (with its encrypted secret), by name."""
    return list(db.query(f"SELECT * FROM providers WHERE {scope_of(db).owns()} ORDER BY name"))


def get_provider(db, name: str) -> dict | None:
    """A provider's row (with its encrypted secret), or None."""
    return first(db, f"SELECT * FROM providers WHERE name = ? AND {scope_of(db).owns()}", [name])


def delete_provider(db, name: str) -> bool:
    """Remove a provider; False if there was none of that name."""
    with transaction(db) as conn:
        return conn.execute(f"DELETE FROM providers WHERE name = ? AND {scope_of(db).owns()}",
                            (name,)).rowcount != 0


# --- transport identities and receptions -----------------------------------------------------


def link_identity(db, provider: str, ext_id: str, node_id: str, device_id=None) -> None:
    """Map a transport identity (DevEUI on a provider) to a node."""
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO transport_ids (provider, ext_id, node_id, device_id) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (provider, ext_id) DO UPDATE SET node_id = excluded.node_id,"
            " device_id = coalesce(excluded.device_id, transport_ids.device_id)",
            (provider, ext_id.upper(), node_id, device_id),
        )


def identities(db, node_id: str) -> list[dict]:
    """A node's transport identities on every provider."""
    return list(db.query("SELECT provider, ext_id, device_id, last_seen, last_dr FROM"
                         " transport_ids WHERE node_id = ? ORDER BY provider", [node_id]))


def node_identities(db, node_id: str, provider: str) -> list[dict]:
    """A node's identities on one provider, the one heard last first."""
    return list(db.query("SELECT ext_id, device_id, last_dr FROM transport_ids WHERE node_id = ?"
                         " AND provider = ? ORDER BY last_seen DESC", [node_id, provider]))


def resolve(db, provider: str) -> dict[str, str]:
    """ext_id -> node for one provider: its own mappings, then DevEUIs minted at registration."""
    out = {r["dev_eui"].upper(): r["node_id"] for r in db.query(
        "SELECT node_id, dev_eui FROM node_credentials WHERE dev_eui IS NOT NULL"
        " AND revoked_at IS NULL")}
    # provider '*': another supplier's device registered by DevEUI on every network
    # (store/profiles.py register_device); a provider's own mapping comes last and wins.
    for r in db.query("SELECT ext_id, node_id FROM transport_ids WHERE provider IN (?, '*')"
                      " ORDER BY provider = ?", [provider, provider]):
        out[r["ext_id"]] = r["node_id"]
    return out


def receptions(db, node_id: str, limit=50) -> list[dict]:
    """A node's newest receptions (one per gateway and provider that heard a frame)."""
    return list(db.query(
        "SELECT seq, provider, received_at, gateway, rssi, snr, sf, dr, freq, airtime, fcnt"
        " FROM receptions WHERE node_id = ? ORDER BY received_at DESC,"
        f" {'ctid' if db.dialect == 'postgresql' else 'rowid'} DESC LIMIT ?",
        [node_id, limit]))


def recent_frames(db, node_id: str, limit=10) -> list[dict]:
    """A node's newest uplink frames with the provider that carried each (seq order: the
    primary key, so the node page stays fast with millions of frames) and how many gateways
    heard it."""
    rows = list(db.query(
        "SELECT seq, type, received_at, provider FROM frames WHERE node_id = ? AND direction ="
        " 'up' ORDER BY seq DESC LIMIT ?", [node_id, limit]))
    if rows:
        counts = dict(db.execute(
            "SELECT seq, count(*) FROM receptions WHERE node_id = ? AND seq >= ? GROUP BY seq",
            [node_id, rows[-1]["seq"]]).fetchall())
        for r in rows:
            r["receptions"] = counts.get(r["seq"], 0)
    return rows


def store_radio(db, receptions: list[tuple], idents: list[tuple], acks: list[tuple]) -> None:
    """What a provider ingest batch learnt besides the frames, in one transaction.

    receptions: (node, seq, provider, received_at, gateway, rssi, snr, sf, dr, freq, airtime,
    fcnt, uplink_key), stored once per (provider, uplink_key, gateway): a message the provider
    delivers again, or that two workers both took, adds nothing. idents: (provider, ext_id,
    node, device_id, last_seen, last_dr); acks: (node, provider, t, seq, fcnt) of confirmed
    uplinks the network acknowledged.
    """
    with transaction(db) as conn:
        conn.executemany(
            "INSERT INTO receptions (node_id, seq, provider, received_at, gateway, rssi,"
            " snr, sf, dr, freq, airtime, fcnt, uplink_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            receptions)
        conn.executemany(
            "INSERT INTO transport_ids (provider, ext_id, node_id, device_id, last_seen,"
            " last_dr) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider, ext_id) DO UPDATE"
            " SET node_id = excluded.node_id, device_id = excluded.device_id,"
            " last_seen = excluded.last_seen, last_dr = excluded.last_dr",
            idents)
        conn.executemany(
            "INSERT INTO provider_downlinks (node_id, provider, t, size, kind,"
            " seq, fcnt) VALUES (?, ?, ?, 0, 'ack', ?, ?) ON CONFLICT DO NOTHING", acks)


def reception_buckets(db, node_id, column, since, until, buckets) -> list[tuple]:
    """(t, min, avg, max) of LoRaWAN rssi or snr over all gateways and providers, in slices."""
    if column not in ("rssi", "snr"):
        raise BadFilter(f"no reception column {column!r}")
    return time_buckets(db, "receptions", "received_at", column, node_id, since, until, buckets)


def has_receptions(db, node_id) -> bool:
    """True if a LoRaWAN provider ever reported radio metadata for the node."""
    return db.conn.execute("SELECT 1 FROM receptions WHERE node_id = ? LIMIT 1",
                           (node_id,)).fetchone() is not None


# --- downlinks and their daily budget --------------------------------------------------------


def provider_of(db, node_id: str) -> dict | None:
    """name, kind and downlinks_per_day of the provider a node was last heard on, or None."""
    return first(
        db, "SELECT p.name, p.kind, p.downlinks_per_day FROM nodes n JOIN providers p"
        " ON p.name = n.provider WHERE n.id = ?", [node_id])


def node_providers(db, node_id: str) -> list[dict]:
    """name and downlinks_per_day of every provider a node has an identity on, by name."""
    return list(db.query(
        "SELECT DISTINCT p.name, p.downlinks_per_day FROM transport_ids t JOIN"
        " providers p ON p.name = t.provider WHERE t.node_id = ? ORDER BY p.name", [node_id]))


def downlinks_since(db, node_id: str, provider: str, since: float) -> tuple[int, int]:
    """(downlinks, of which ACKs) a node used on a provider since a time."""
    used, acks = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE kind = 'ack') FROM provider_downlinks"
        " WHERE node_id = ? AND provider = ? AND t >= ?",
        [node_id, provider, since]).fetchone()
    return used, acks


def org_downlinks_since(db, node_id: str, since: float) -> int:
    """LoRaWAN downlinks (the fleet's and the networks' ACKs, on every provider) of all nodes of
    a node's organisation since a time: what its daily quota counts."""
    return db.execute(
        "SELECT count(*) FROM provider_downlinks d JOIN nodes n ON n.id = d.node_id"
        " WHERE n.org_id = (SELECT org_id FROM nodes WHERE id = ?) AND d.t >= ?",
        [node_id, since]).fetchone()[0]


def record_downlink(db, node_id: str, provider: str, t: float, size: int) -> None:
    """Count a downlink the fleet sent through a provider."""
    with transaction(db) as conn:
        conn.execute("INSERT INTO provider_downlinks (node_id, provider, t, size)"
                     " VALUES (?, ?, ?, ?)", (node_id, provider, t, size))
