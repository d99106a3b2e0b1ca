"""An export destination sends only what its organisation may read (issue 18): its own nodes and
those shared with it, never another organisation's, even when it selects "all nodes". Real
webhook receivers, the real worker and the real ingest path."""

import threading

from export_receivers import WebhookReceiver
from test_webhook_delivery import KEY, ingest, wait_for

from fleet.exports import registry, worker
from fleet.store import exports as export_store
from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store.scope import EVERYTHING, Scope, set_scope


def test_a_destination_of_another_organisation_gets_only_its_nodes(db, settings):
    parking = Scope(orgs.add_organisation(db, "parking"))
    set_scope(db, parking)
    node_store.enrol_node(db, "p-1")
    set_scope(db, EVERYTHING)
    node_store.enrol_node(db, "c-1")
    ingest(db, "p-1", 1, 5)   # 5 frames of 2 readings each
    ingest(db, "c-1", 1, 7)
    stop = threading.Event()
    with WebhookReceiver(KEY) as park_rx, WebhookReceiver(KEY) as city_rx:
        set_scope(db, parking)
        registry.add(db, settings.data_dir, {"name": "park", "kind": "webhook",
                                             "url": park_rx.url}, KEY, from_start=True)
        set_scope(db, EVERYTHING)
        registry.add(db, settings.data_dir, {"name": "city", "kind": "webhook",
                                             "url": city_rx.url}, KEY, from_start=True)
        # What each is behind by counts only what it may read (the page, the API, /metrics).
        assert registry.get(db, "park")["behind"] == 10
        assert registry.get(db, "city")["behind"] == 24
        assert export_store.backlog(db, (0, 0), [], [], parking.org_id) == 10
        t = threading.Thread(target=worker.run, args=(settings, stop),
                             kwargs={"batch": 50, "max_backoff": 0.5}, daemon=True)
        t.start()
        try:
            assert wait_for(lambda: len(city_rx.records) == 24 and len(park_rx.records) == 10)
            # Shared with parking: the rows stored from now on reach its destination too.
            orgs.share(db, "platform", "parking", node_id="c-1")
            ingest(db, "c-1", 8, 2)
            assert wait_for(lambda: len(park_rx.records) == 14 and len(city_rx.records) == 28)
            assert wait_for(lambda: registry.get(db, "park")["behind"] == 0)
        finally:
            stop.set()
            t.join(timeout=30)
    park_nodes = {name.split(":")[3] for name, _t in park_rx.records}
    assert park_nodes == {"p-1", "c-1"}
    assert len([n for n, _t in park_rx.records if ":c-1:" in n]) == 4  # only the shared ones
    assert {name.split(":")[3] for name, _t in city_rx.records} == {"p-1", "c-1"}
