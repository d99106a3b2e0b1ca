"""`fleet org`: organisations, their members and quotas (the platform operator's commands)."""

import click

from fleet.console import friendly, open_store, when
from fleet.store import orgs as org_store

ROLES = ("viewer", "technician", "operator", "admin")  # as fleet/web/auth.py (a test checks)


@click.group("org")
def org_group():
    """Organisations sharing the platform: each sees only its own nodes and objects.

    Example: fleet org add parking --max-nodes 500
    """


def _limit(value) -> str:
    return "no limit" if value is None else str(value)


@org_group.command("list")
@friendly
def org_list():
    """The organisations, with their nodes, members and quotas.

    Example: fleet org list
    """
    for o in org_store.list_organisations(open_store()):
        mark = "  (platform operator)" if o["platform"] else ""
        click.echo(f"{o['name']:24} nodes {o['nodes']:>6}  members {o['members']:>4}  "
                   f"max nodes {_limit(o['max_nodes'])}  API requests/min "
                   f"{_limit(o['max_requests_per_minute'])}  LoRaWAN downlinks/day "
                   f"{_limit(o['max_downlinks_per_day'])}  since {when(o['created'])}{mark}")


@org_group.command("add")
@click.argument("name")
@click.option("--max-nodes", type=click.IntRange(min=0), default=None,
              help="Most nodes it may hold (default: no limit).")
@click.option("--max-requests-per-minute", type=click.IntRange(min=1), default=None,
              help="Most API requests per minute, shared by its tokens (429 past it).")
@friendly
def org_add(name, max_nodes, max_requests_per_minute):
    """Create an organisation.

    Example: fleet org add parking --max-nodes 500
    """
    org_store.add_organisation(open_store(), name, max_nodes, max_requests_per_minute,
                               actor="cli")
    click.echo(f"organisation {name} added")


@org_group.command("member")
@click.argument("org")
@click.argument("user")
@click.argument("role", type=click.Choice(ROLES))
@friendly
def org_member(org, user, role):
    """Give a user a role in an organisation (or change it); their sessions end.

    Example: fleet org member parking tess technician
    """
    org_store.set_member(open_store(), user, org, role, actor="cli")
    click.echo(f"user {user} is {role} in {org}")


@org_group.command("unmember")
@click.argument("org")
@click.argument("user")
@friendly
def org_unmember(org, user):
    """Take a user's role in an organisation away; their sessions end.

    Example: fleet org unmember parking tess
    """
    org_store.remove_member(open_store(), user, org, actor="cli")
    click.echo(f"user {user} is no longer in {org}")


@org_group.command("quota")
@click.argument("org")
@click.option("--max-nodes", type=click.IntRange(min=0), default=None,
              help="Most nodes it may hold (left out: no limit).")
@click.option("--max-requests-per-minute", type=click.IntRange(min=1), default=None,
              help="Most API requests per minute, shared by its tokens (429 past it).")
@click.option("--max-downlinks-per-day", type=click.IntRange(min=0), default=None,
              help="Most LoRaWAN downlinks per UTC day of all its nodes, the networks' ACKs"
                   " included (a command past it is refused with the reason).")
@friendly
def org_quota(org, max_nodes, max_requests_per_minute, max_downlinks_per_day):
    """Set an organisation's quotas (an option left out means no limit).

    Example: fleet org quota parking --max-nodes 600 --max-downlinks-per-day 200
    """
    org_store.set_quotas(open_store(), org, max_nodes, max_requests_per_minute, actor="cli",
                         max_downlinks_per_day=max_downlinks_per_day)
    click.echo(f"{org}: max nodes {_limit(max_nodes)}, API requests/min "
               f"{_limit(max_requests_per_minute)}, LoRaWAN downlinks/day "
               f"{_limit(max_downlinks_per_day)}")


@org_group.command("share")
@click.argument("org")
@click.option("--to", "grantee", required=True, metavar="ORG", help="Who may read.")
@click.option("--node", default=None, help="One node of ORG to share.")
@click.option("--tag", default=None, help="Share every node of ORG carrying this tag.")
@friendly
def org_share(org, grantee, node, tag):
    """Let another organisation read a node or tagged nodes of ORG (never command them).

    Example: fleet org share parking --to environment --tag temperature
    """
    grant = org_store.share(open_store(), org, grantee, node_id=node, tag=tag, actor="cli")
    click.echo(f"grant {grant}: {grantee} reads {'node ' + node if node else 'tag ' + tag}"
               f" of {org}")


@org_group.command("unshare")
@click.argument("grant", type=int)
@friendly
def org_unshare(grant):
    """Revoke a grant (it stays on record as revoked).

    Example: fleet org unshare 3
    """
    org_store.revoke_share(open_store(), grant, actor="cli")
    click.echo(f"grant {grant} revoked")


@org_group.command("shares")
@friendly
def org_shares():
    """Grants given and received, revoked ones too.

    Example: fleet --org parking org shares
    """
    for s in org_store.list_shares(open_store()):
        what = f"node {s['node_id']}" if s["node_id"] else f"tag {s['tag']}"
        state = f"revoked {when(s['revoked_at'])}" if s["revoked_at"] else "live"
        click.echo(f"{s['id']:>5}  {s['org']} -> {s['grantee']}  {what}  since "
                   f"{when(s['created'])}  {state}")


@org_group.command("move")
@click.argument("node")
@click.option("--to", "target", required=True, metavar="ORG", help="The new organisation.")
@friendly
def org_move(node, target):
    """Move a node to another organisation with its identity and history (the platform
    operator's command; grants of the node end).

    Example: fleet org move air-7 --to environment
    """
    org_store.move_node(open_store(), node, target, actor="cli")
    click.echo(f"node {node} moved to {target}")


@org_group.command("move-request")
@click.argument("node")
@click.option("--to", "other", required=True, metavar="ORG",
              help="The organisation to give the node to, or (for a node shared with yours) "
                   "the owner you ask it from.")
@friendly
def org_move_request(node, other):
    """Ask another organisation to take a node of yours, or ask the owner of a node shared with
    yours for it; their admin approves or rejects (`fleet org move-approve`). Run as your
    organisation (--org); a request ends unanswered after 14 days.

    Example: fleet --org parking org move-request air-7 --to environment
    """
    rid = org_store.request_move(open_store(), node, other, actor="cli")
    click.echo(f"move request {rid}: node {node}, waiting for {other}'s decision")


@org_group.command("moves")
@friendly
def org_moves():
    """Move requests your organisation made or must decide, newest first.

    Example: fleet --org environment org moves
    """
    for m in org_store.list_moves(open_store()):
        decided = f"  {m['state']} {when(m['decided_at'])}" if m["decided_at"] else ""
        click.echo(f"{m['id']:>5}  {m['node_id']}  {m['from_org']} -> {m['to_org']}  asked by "
                   f"{m['requested_by_org']} {when(m['requested_at'])}  {m['state']}{decided}")


def _decide(request_id, approve):
    m = org_store.decide_move(open_store(), request_id, approve, actor="cli")
    verb = "approved: the node moved" if approve else "rejected"
    click.echo(f"move request {request_id} (node {m['node_id']}) {verb}")


@org_group.command("move-approve")
@click.argument("request_id", type=int)
@friendly
def org_move_approve(request_id):
    """Approve a move the other organisation asked for: the node moves now, with its history.

    Example: fleet --org environment org move-approve 4
    """
    _decide(request_id, True)


@org_group.command("move-reject")
@click.argument("request_id", type=int)
@friendly
def org_move_reject(request_id):
    """Reject a move the other organisation asked for.

    Example: fleet --org environment org move-reject 4
    """
    _decide(request_id, False)


@org_group.command("move-cancel")
@click.argument("request_id", type=int)
@friendly
def org_move_cancel(request_id):
    """Withdraw a move request your organisation made, while it waits.

    Example: fleet --org parking org move-cancel 4
    """
    org_store.cancel_move(open_store(), request_id, actor="cli")
    click.echo(f"move request {request_id} cancelled")


def register(cli):
    cli.add_command(org_group)
