"""The organisation filter: a Scope on every connection, and the SQL it adds to queries.

Isolation lives here, in one place (docs/architecture.md, "Organisations"): a connection
carries a Scope (set_scope), and every store query for an organisation's data adds the SQL the
scope gives (Scope.owns, Scope.sees_nodes, Scope.node_ids) to its WHERE clause. A view never
filters by organisation itself: the web sets the request's scope once, from the API token or the
user's chosen organisation, and what the scope does not cover simply is not found (the views
answer 404, so another organisation's objects do not even leak their existence).

A connection without a scope is a worker's or a command line's own (ingest, exports, upkeep):
it sees everything, like the platform operator's organisation.
"""

from dataclasses import dataclass

PLATFORM_ORG = 1  # the first organisation: the migration makes the existing fleet its own


@dataclass(frozen=True)
class Scope:
    """What a connection may see: one organisation's objects, or everything (the platform's).

    Methods return SQL fragments for a WHERE clause. The organisation's id is an int the store
    itself read from the database and is written into the text (never a request's string), so
    every query keeps its own placeholders as they are.
    """

    org_id: int
    platform: bool = False

    def owns(self, column: str = "org_id") -> str:
        """The rows of a table with an org_id column that this scope's organisation owns."""
        if self.platform:
            return "true"
        return f"{column} = {int(self.org_id)}"

    def sees_nodes(self, id_column: str = "nodes.id", org_column: str = "nodes.org_id",
                   tags_column: str = "nodes.tags", dialect: str = "sqlite") -> str:
        """The nodes this scope may read: its own and those another organisation shared with it
        (one by one, or by a tag they carry). org_column and tags_column are kept for callers
        that name them; the test is on the node's id alone."""
        if self.platform:
            return "true"
        return f"{id_column} IN ({self.visible_node_ids(dialect)})"

    def visible_node_ids(self, dialect: str = "sqlite") -> str:
        """A SELECT of the ids of the nodes this scope may read (not for the platform's scope).

        A set the database builds once per statement, not a test per row: an `org_id = N OR
        EXISTS (shares ...)` per row made a node list page walk every node of the fleet
        (tests/bench/bench_orgs.py)."""
        o = int(self.org_id)
        tagged = _carries_granted_tag("t", dialect)
        # Node grants and tag grants apart: with `s.node_id = t.id OR <tag>` in one join the
        # planner could use no index and read every node of the fleet for each live grant; so
        # a node grant is found by its id, a tag grant among the granting organisation's nodes.
        live = f"s.grantee_org_id = {o} AND s.revoked_at IS NULL"
        return (f"SELECT id FROM nodes WHERE org_id = {o}"
                f" UNION SELECT t.id FROM shares s JOIN nodes t ON t.id = s.node_id"
                f" AND t.org_id = s.org_id WHERE {live}"
                f" UNION SELECT t.id FROM shares s JOIN nodes t ON t.org_id = s.org_id"
                f" WHERE {live} AND s.tag IS NOT NULL AND {tagged}")

    def sees_node_row(self, alias: str = "nodes", dialect: str = "sqlite") -> str:
        """A test on one row of nodes (named alias): may this scope read that node? The same
        rule as visible_node_ids, written for one row: its own org_id and tags and the
        organisation's live grants. For queries already narrowed to a node or a few by id, where
        building the organisation's whole set of nodes is the cost (a node page built it five
        times: the 13 % an organisation's member paid over one organisation, bench_orgs.py)."""
        if self.platform:
            return "true"
        o = int(self.org_id)
        tagged = _carries_granted_tag(alias, dialect)
        return (f"({alias}.org_id = {o} OR EXISTS (SELECT 1 FROM shares s"
                f" WHERE s.grantee_org_id = {o} AND s.revoked_at IS NULL"
                f" AND s.org_id = {alias}.org_id"
                f" AND (s.node_id = {alias}.id OR (s.tag IS NOT NULL AND {tagged}))))")

    def sees_node_id_of_row(self, column: str = "node_id", dialect: str = "sqlite") -> str:
        """Rows whose node_id column names a node this scope may read, tested row by row: for
        queries narrowed to one node (`node_id = ?`), whose few rows each cost one index lookup.
        Never for a query over many nodes: there sees_node_id builds the set once."""
        if self.platform:
            return "true"
        return (f"EXISTS (SELECT 1 FROM nodes v WHERE v.id = {column}"
                f" AND {self.sees_node_row('v', dialect)})")

    def sees_node_id(self, column: str = "node_id", dialect: str = "sqlite") -> str:
        """Rows whose node_id column names a node this scope may read (the platform's scope
        keeps every row, also those of nodes not registered)."""
        if self.platform:
            return "true"
        return f"{column} IN ({self.visible_node_ids(dialect)})"

    def owns_node_id(self, column: str = "node_id") -> str:
        """Rows whose node_id column names a node this scope's organisation owns (may change)."""
        if self.platform:
            return "true"
        return f"{column} IN (SELECT id FROM nodes WHERE org_id = {int(self.org_id)})"


def _carries_granted_tag(alias: str, dialect: str) -> str:
    """The node row named alias carries the tag of the grant s (a JSON array of tags)."""
    return {
        "sqlite": f"EXISTS (SELECT 1 FROM json_each({alias}.tags) WHERE value = s.tag)",
        "postgresql": f"{alias}.tags::jsonb @> jsonb_build_array(s.tag)",
    }[dialect]


EVERYTHING = Scope(PLATFORM_ORG, platform=True)


def set_scope(db, scope: Scope, remember: bool = False) -> None:
    """Make every store query on this connection see only what scope covers.

    remember=True (a web request's connection, which lives for one request): a node the scope
    was found to read is remembered, so the page's other queries about that node (its status,
    place, alerts, commands) skip the grants test (one_node). Each such test cost PostgreSQL
    ~0.15 ms of parsing and planning, five of them per node page (bench_orgs.py). Only readable
    nodes are remembered, and whatever can take a node away from a scope (a move, a revoked
    grant, a changed tag) forgets them all (forget_readable)."""
    db.conn.scope = scope
    db.conn.readable_nodes = set() if remember else None


def scope_of(db) -> Scope:
    """The scope of a connection (db or the conn a transaction yields); everything if unset."""
    conn = getattr(db, "conn", db)
    return getattr(conn, "scope", None) or EVERYTHING


def org_of_scope(db) -> int:
    """The organisation new objects made through this connection belong to."""
    return scope_of(db).org_id


def one_node(db, node_id: str, row_test: str) -> str:
    """The organisation filter of a query narrowed to node node_id: row_test (the scope's
    sees_node_row or sees_node_id_of_row), or "true" where this request's connection already
    found the node readable (set_scope remember=True, note_readable)."""
    known = getattr(getattr(db, "conn", db), "readable_nodes", None)
    return "true" if known and node_id in known else row_test


def note_readable(db, node_id: str) -> None:
    """Remember, for this request's connection only, that its scope reads node node_id (called
    by a query that tested the node's row and found it)."""
    known = getattr(getattr(db, "conn", db), "readable_nodes", None)
    if known is not None:
        known.add(node_id)


def forget_readable(db) -> None:
    """Forget every node remembered readable: called by what can take a node from a scope."""
    conn = getattr(db, "conn", db)
    if getattr(conn, "readable_nodes", None):
        conn.readable_nodes = set()
