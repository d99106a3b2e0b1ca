"""`fleet org` and `fleet --org NAME`: the CLI acts for one organisation when told to."""

from fleet import cli
from fleet.organisations import cli as org_cli
from fleet.store import nodes as node_store
from fleet.store import orgs
from fleet.store.scope import Scope, set_scope
from fleet.web import auth


def test_the_cli_knows_the_same_roles():
    assert org_cli.ROLES == auth.ROLES


def test_org_commands_and_the_org_option_scope_what_the_cli_sees(runner, db):
    def run(*args):
        r = runner.invoke(cli.cli, list(args))
        assert r.exit_code == 0, r.output
        return r.output

    run("org", "add", "parking", "--max-nodes", "1")
    run("org", "add", "environment")
    assert "parking" in run("org", "list") and "platform operator" in run("org", "list")
    set_scope(db, Scope(orgs.get_organisation(db, "parking")["id"]))
    node_store.enrol_node(db, "park-1")
    set_scope(db, Scope(orgs.get_organisation(db, "environment")["id"]))
    node_store.enrol_node(db, "env-1")
    # The node list of each organisation holds its own node only; without --org, both.
    assert "park-1" in run("--org", "parking", "nodes") and "env-1" not in run(
        "--org", "parking", "nodes")
    assert "env-1" in run("--org", "environment", "nodes")
    everything = run("nodes")
    assert "park-1" in everything and "env-1" in everything
    # An unknown organisation and a full quota are one-line errors.
    r = runner.invoke(cli.cli, ["--org", "nowhere", "nodes"])
    assert r.exit_code == 1 and "unknown organisation 'nowhere'" in r.output
    r = runner.invoke(cli.cli, ["user", "add", "tess", "--password-stdin"], input="long enough\n")
    assert r.exit_code == 0, r.output
    assert "tess is technician in parking" in run("org", "member", "parking", "tess", "technician")
    r = runner.invoke(cli.cli, ["org", "member", "nowhere", "tess", "viewer"])
    assert r.exit_code == 1 and "unknown organisation" in r.output
    assert "no longer in parking" in run("org", "unmember", "parking", "tess")
    assert "max nodes 5" in run("org", "quota", "parking", "--max-nodes", "5")
