"""Webhook destinations: each batch POSTed as one SenML JSON pack, signed with HMAC-SHA256.

Headers of every POST (docs/integrations.md shows how to verify):
    Content-Type: application/senml+json
    X-Polylink-Delivery: <sha256 of the batch's item ids>  -- the same on a re-send
    X-Polylink-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, "<t>." + body)>
A 2xx answer delivers the batch. Any other 4xx (but 401, 403, 404, 408, 429: down) refuses it;
a batch of several nodes is then sent again node by node, so only the node whose pack is
refused is reported and skipped. 5xx, timeouts and refused connections: down, retried.
"""

import hashlib
import hmac
import time

import orjson

from . import http
from .adapter import Batch, Delivery, Destination, DestinationDown
from .senml import pack

KIND = "webhook"
LABEL = "Webhook (SenML JSON over HTTPS)"
SECRET = "HMAC key"
SIGNATURE_HEADER = "X-Polylink-Signature"
DELIVERY_HEADER = "X-Polylink-Delivery"


def check(url: str, options: dict) -> dict:
    return http.check(KIND, url, options)


def signature(key: str, t: int, body: bytes) -> str:
    """The signature header's value for a body sent at unix time t."""
    mac = hmac.new(key.encode(), str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(key: str, header: str, body: bytes, now: float, tolerance: float = 300) -> bool:
    """True if a signature header is valid for body and at most `tolerance` seconds old."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - t) > tolerance:
        return False
    return hmac.compare_digest(signature(key, t, body), header)


class Sender:
    def __init__(self, dest: Destination):
        self.dest = dest
        self.client = http.Client(dest.url, dest.timeout, dest.options.get("ca_file"))

    def _post(self, items_by_node: dict) -> tuple[int, bytes]:
        records = []
        ids = []
        for node_id, items in items_by_node.items():
            records.extend(pack(node_id, items))
            ids.extend(i.id for i in items)
        body = orjson.dumps(records)  # compact JSON, as ngsild.py sends, in a fifth of the time
        headers = {"Content-Type": "application/senml+json",
                   DELIVERY_HEADER: hashlib.sha256("\n".join(ids).encode()).hexdigest()}
        if self.dest.secret:
            headers[SIGNATURE_HEADER] = signature(self.dest.secret, int(time.time()), body)
        return self.client.request("POST", None, body, headers)

    def send(self, batch: Batch) -> Delivery:
        groups = batch.by_node()
        delivery = Delivery()
        status, body = self._post(groups)
        if 200 <= status < 300:
            return delivery
        if status >= 500 or status in http.DOWN_STATUSES or status < 200:
            raise DestinationDown(http.describe(status, body))
        if len(groups) == 1:
            (items,) = groups.values()
            delivery.refuse(items, http.describe(status, body))
            return delivery
        for node_id, items in groups.items():  # find the node whose readings it refuses
            status, body = self._post({node_id: items})
            if status >= 500 or status in http.DOWN_STATUSES or status < 200:
                raise DestinationDown(http.describe(status, body))
            if not 200 <= status < 300:
                delivery.refuse(items, http.describe(status, body))
        return delivery

    def close(self) -> None:
        self.client.close()


def open(dest: Destination) -> Sender:  # noqa: A001 - the adapter contract's name
    return Sender(dest)
