"""Which organisation a request acts for, and with which role (the web side of the store's scope).

- A logged-in user: the organisation chosen with the switcher (kept in the session), else the
  first they belong to (the platform's first); their role is their role in it.
- An API token: the organisation it was made in, with the token's own role.
- A node fetching update files: its own organisation.
- Suppliers' SenML intake (/api/v1/ingest) is a data entry point like the ingest worker and is
  checked by its supplier token, so it gets the worker's scope.
Until one of these is known, the request's connection sees nothing (fleet/web/db.py NOBODY).
"""

import time

from flask import g, request, session
from werkzeug.exceptions import TooManyRequests

from fleet.store import orgs as org_store
from fleet.store.scope import EVERYTHING, Scope
from fleet.web import db as web_db

SESSION_KEY = "org_id"


def scope_of_org(org: dict) -> Scope:
    return Scope(org["id"], platform=bool(org["platform"]))


def for_user() -> None:
    """Give g.user the role of their chosen organisation and scope the request to it."""
    user = g.get("user")
    if user is None:
        if request.path.startswith("/api/v1/ingest"):
            web_db.use_scope(EVERYTHING)
        return
    db = web_db.get_db()
    chosen = session.get(SESSION_KEY)
    member = org_store.membership(db, user["id"], chosen) if chosen is not None else None
    if member is None:
        mine = org_store.memberships(db, user["id"])
        member = mine[0] if mine else None
    # The role read everywhere (auth.current_role) is the one in this organisation; a user
    # belonging to none has no role and is let into nothing.
    g.user = dict(user, role=member["role"] if member else None)
    g.org = member
    if member is None:
        return
    # Written only when it changes: an assignment marks the cookie session modified, and every
    # response would then carry the cookie as its request read it. A request that started before
    # another one flashed a message (a node page chart that loads lazily as the page scrolls to a
    # form) would answer after it with the older cookie, and the browser would drop the message.
    if chosen != member["id"]:
        session[SESSION_KEY] = member["id"]
    web_db.use_scope(scope_of_org(member))


def for_token(token: dict) -> None:
    """Scope an API request to its token's organisation."""
    db = web_db.get_db()
    org = org_store.get_organisation(db, int(token["org_id"]))
    quota = org["max_requests_per_minute"]
    if quota is not None:  # only a limited organisation pays the write of counting
        now = time.time()
        used = org_store.count_request(db, org["id"], now)
        if used > quota:
            raise TooManyRequests(
                f"organisation {org['name']} is at its quota of {quota} API requests per"
                " minute; try again in the next minute",
                retry_after=int(60 - now % 60) + 1)
    g.org = dict(org, role=token["role"])
    web_db.use_scope(scope_of_org(org))


def for_node(node_id: str) -> None:
    """Scope a node's own request (OTA files) to the node's organisation."""
    db = web_db.get_db()
    org_id = org_store.org_of_node(db, node_id)
    web_db.use_scope(web_db.NOBODY if org_id is None else org_store.scope_for(db, org_id))
