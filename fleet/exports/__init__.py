"""Exports: every stored reading goes out once to each registered destination, in open standards.

One adapter module per destination kind (the contract is in adapter.py); `ADAPTERS` is the one
place a new kind is registered. One delivery mechanism under all of them (worker.py): a durable
cursor per destination over the store, batches, retries with capped backoff, idempotent ids.
"""

from . import mqtt, ngsild, sensorthings, webhook
from .adapter import Batch, Delivery, Destination, DestinationDown, ExportError, Item, Node

ADAPTERS = {webhook.KIND: webhook, mqtt.KIND: mqtt, ngsild.KIND: ngsild,
            sensorthings.KIND: sensorthings}

__all__ = ["ADAPTERS", "Batch", "Delivery", "Destination", "DestinationDown", "ExportError",
           "Item", "Node"]
