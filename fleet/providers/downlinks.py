"""Downlinks through the LoRaWAN provider a node was last heard on, within its limits.

Limits checked before anything is published: the frame must fit the payload of the data rate
the node last used (EU868 table in polylink.lorawan.region), and the node must have downlinks left
in its provider's daily budget (The Things Network's fair use: 10 a day). The budget counts
what the fleet sent and the network's ACKs of the node's confirmed uplinks (stored by the ingest
worker, fleet/providers/worker.py): TTN counts both. The provider queues the downlink (TTS
`down/push`, ChirpStack `command/down` both append to the device's queue) and sends it in a
receive window after the node's next uplink (Class A).
"""

import time

from polylink.lorawan import region as region_eu868

from fleet import mqtt
from fleet.store import orgs as org_store
from fleet.store import providers as provider_store

from . import ADAPTERS, FPORT, registry

_DAY = 86400


class DownlinkError(Exception):
    """A downlink could not be built or handed to the broker."""


class BrokerUnavailable(DownlinkError):
    """The broker did not accept the downlink."""


class OverLimit(DownlinkError):
    """The provider the node was last heard on cannot take this downlink now."""


class TooLarge(OverLimit):
    """The frame exceeds the payload the node's LoRaWAN data rate allows."""


class BudgetUsed(OverLimit):
    """The node's daily downlink budget on its provider is used up."""


class OrganisationQuotaUsed(OverLimit):
    """The node's organisation used its LoRaWAN downlinks for today (organisations' quota)."""


def _today(now):
    now = time.time() if now is None else now
    return now - now % _DAY  # the budget is per UTC day


def used_today(db, node_id: str, provider: str, now=None) -> tuple[int, int]:
    """(downlinks, of which ACKs) a node used today on a provider."""
    return provider_store.downlinks_since(db, node_id, provider, _today(now))


def budgets(db, node_id: str, now=None) -> list[dict]:
    """Today's downlink budget of a node on each LoRaWAN provider it has an identity on."""
    out = []
    for p in provider_store.node_providers(db, node_id):
        used, acks = used_today(db, node_id, p["name"], now)
        out.append({"provider": p["name"], "limit": p["downlinks_per_day"], "used": used,
                    "acks": acks, "left": max(0, p["downlinks_per_day"] - used)})
    return out


def describe(b: dict) -> str:
    """'3 of 10 used, 2 by ACKs of confirmed uplinks' for a budgets() entry."""
    text = f"{b['used']} of {b['limit']} used"
    if b["acks"]:
        text += f", {b['acks']} by ACKs of confirmed uplinks"
    return text


def send(db, settings, node_id: str, frame: bytes, now=None, fport=FPORT) -> bool:
    """Send frame via the node's LoRaWAN provider; False if the node was last heard elsewhere.

    fport: Polylink's own by default; another supplier's codec names its own.
    """
    p = provider_store.provider_of(db, node_id)
    if p is None:
        return False
    ids = provider_store.node_identities(db, node_id, p["name"])
    if not ids:
        raise OverLimit(f"node {node_id} has no identity on provider {p['name']}")
    ident = ids[0]
    dr = ident["last_dr"] or 0
    limit = region_eu868.max_app_payload(min(dr, len(region_eu868.DATA_RATES) - 1))
    if len(frame) > limit:
        raise TooLarge(f"{len(frame)} bytes do not fit a downlink at DR{dr} (max {limit}) on"
                       f" provider {p['name']}")
    used, acks = used_today(db, node_id, p["name"], now)
    if used >= p["downlinks_per_day"]:
        why = (f"{acks} of them the network's ACKs of confirmed uplinks, {used - acks} sent by"
               " the fleet" if acks else "all sent by the fleet")
        raise BudgetUsed(f"node {node_id} used {used} of its {p['downlinks_per_day']} downlinks"
                         f" for today on provider {p['name']} ({why}); try again after 00:00 UTC")
    org, quota = org_store.downlink_quota_of_node(db, node_id)
    if quota is not None:
        org_used = provider_store.org_downlinks_since(db, node_id, _today(now))
        if org_used >= quota:
            raise OrganisationQuotaUsed(
                f"organisation {org} used {org_used} of its {quota} LoRaWAN downlinks for today"
                " (its quota, counting the networks' ACKs); try again after 00:00 UTC")
    cfg, password = registry.login(db, settings.data_dir, p["name"])
    adapter = ADAPTERS[p["kind"]]
    topic = adapter.downlink_topic(cfg, ident["device_id"] or ident["ext_id"])
    message = adapter.downlink_message(frame, fport, dev_eui=ident["ext_id"])
    try:
        mqtt.publish_once(cfg["host"], cfg["port"], topic, message,
                          cfg["username"] if cfg.get("username") else None, password,
                          tls=bool(cfg.get("tls")))
    except mqtt.Unreachable as e:
        raise BrokerUnavailable(f"cannot reach provider {p['name']} at {cfg['host']}:"
                                f"{cfg['port']}: {e}") from None
    except mqtt.NotAcknowledged:
        raise BrokerUnavailable(f"provider {p['name']} did not acknowledge the downlink"
                                ) from None
    provider_store.record_downlink(db, node_id, p["name"], time.time() if now is None else now,
                                   len(frame))
    return True
