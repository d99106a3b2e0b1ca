"""Must hold (issue 18): as another organisation (`fleet --org environment ...`), no `fleet`
command reads, counts or changes parking's data.

Walks every command of the click group (so a new command is walked without a line here). Every
argument names an object of parking (its node, tag, user, token, release, rollout, profile,
provider, destination, organisation, ...), and every option that picks nodes or objects is fed
one of parking's too. Then the same command line with objects that never existed. A command
fails the walk if:
- it answers parking's object otherwise than the missing one (exit code, or words once each
  line's own names and fresh secrets are taken out): existence must not leak;
- its output carries any of parking's names besides the ones the command line sent (or names
  environment itself gave its own objects earlier in the walk);
- parking's rows are different after it.

A command for the whole platform (its database, certificates, backups, organisations) must
instead refuse for an organisation that is not the platform operator's: PLATFORM_ONLY, checked.
GLOBAL_NAMES lists the creating commands whose names are unique across the platform, so they
answer "taken" for a name parking holds (nothing else of it: checked). NOT_WALKED holds what
cannot run here, with the reason; a name in any list that is no longer a command fails the test.
"""

import re

import click
from twoorgs import GHOST, GHOST_INT, MARK, REAL, forget_ghost, seed, snapshot

from fleet.cli.main import cli

NOT_WALKED = {
    "run": "runs the fleet until stopped (its parts are walked: the routes, `upkeep --once`)",
    "ingest": "runs until stopped; stores what nodes send, by the node's own login",
    "export run": "runs until stopped; what each destination gets: tests/fleet/exports",
    "provider ingest": "runs until stopped; uplinks are stored by the node they belong to",
    "provision flash": "needs a board on a serial port",
    "provision batch": "needs boards on serial ports",
    "provision deploy": "needs a board on a serial port",
}
PLATFORM_ONLY = {
    "backup", "restore", "db copy", "db migrate", "migrate", "doctor",
    "org add", "org quota", "org move", "tls init", "tls renew", "tls show", "tls use",
}
# Names unique across the platform: a node id is its MQTT login, a user name a login (so is a
# supplier's name: supplier.NAME on the broker), and
# tokens, profiles, providers and destinations are named once for the whole fleet (an
# organisation's own namespace for the last four is not built: docs/operations.md). A signing
# key's id too: a node names the keys it trusts by id alone; and a supplier's name, its broker
# login.
GLOBAL_NAMES = {"keys create", "node add", "node logins", "token create", "profile set",
                "provider add", "supplier add", "export add", "export reader add", "user add",
                "user rename", "provision image", "provision merged-image"}
TAKEN = re.compile(r"^([^\n]*: \n)*Error: [^\n]*(is taken|already exists)[^\n]*\n$")

KINDS = {"export add": "webhook", "provider add": "chirpstack"}
FLAGS = {"upkeep": ["--once"]}  # without it upkeep runs until stopped
# Options a command requires, or that make it reach the store, with values naming nothing of
# parking's.
PLAIN = {
    "board": "ESP32_GENERIC", "url": "https://example.org/x", "codec": "lpp",
    "host": "lns.example", "application": "app", "names": "fleet.example",
    "ports": "/dev/null", "target": "environment", "grantee": "environment", "role": "viewer",
    "command": "reboot", "code": "0011223344556677", "dev_eui": "0011223344556677",
    "mqtt_host": "192.168.1.10", "interval": "60",
    # Organisation names are how organisations find each other to share or move: not secret.
    "other": "parking",
}
LEFT_OUT = {"org share": {"tag"}}  # one node or one tag: the walk shares parking's node
# Secrets and keys a command makes fresh each time, and the test's own folders.
FRESH = re.compile(r"[A-Za-z0-9_\-.]{24,}|/tmp/\S+")


def _names(ghost: bool, ints: dict, tmp, n: int) -> dict:
    """What each argument and option names, by its parameter name: parking's object, or (with
    ghost) one that never existed, named afresh for each command (the walk creates some)."""
    if not ghost:
        return {
            "node_id": REAL["node"], "node": REAL["node"], "nodes": REAL["node"],
            "node_ids": REAL["node"], "tags": "zqa-tag", "tag": "zqa-tag",
            "rid": ints["rid"], "claim_id": ints["claim_id"], "grant": 1,
            "token_id": REAL["name"],
            "request_id": ints["request_id"],
            "version": "9.9.9", "key_id": "zqa-key", "profile": REAL["name"],
            "provider": REAL["name"], "supplier": REAL["name"], "only": REAL["name"],
            "org": "parking", "user": REAL["user"], "token": REAL["token"],
            "object": REAL["name"], "file": str(tmp / "zqa.csv"), "new_name": "zqa-renamed",
            "firmware": str(tmp / "micropython.bin"),
        }
    return {
        "node_id": GHOST["node"], "node": GHOST["node"], "nodes": GHOST["node"],
        "node_ids": GHOST["node"], "tags": f"ghost-tag{n}", "tag": f"ghost-tag{n}",
        "rid": GHOST_INT, "claim_id": GHOST_INT, "grant": GHOST_INT, "version": f"0.0.{n}",
        "token_id": f"ghost-nm{n}",
        "request_id": GHOST_INT,
        "key_id": f"ghost-key{n}", "profile": f"ghost-nm{n}", "provider": f"ghost-nm{n}",
        "supplier": f"ghost-nm{n}", "only": f"ghost-nm{n}", "org": f"ghost-org{n}",
        "user": f"ghost-us{n}", "token": f"ghost-tk{n}", "object": f"ghost-nm{n}",
        "file": str(tmp / "ghost.csv"), "new_name": f"ghost-renamed{n}",
        "firmware": str(tmp / "micropython.bin"),
    }


def _argv(path: str, cmd: click.Command, names: dict) -> list[str]:
    args = []
    for p in cmd.params:
        if p.name in LEFT_OUT.get(path, ()):
            continue
        if p.name in names:
            value = names[p.name]
        elif p.name == "name":  # the object the command's group is about
            value = names.get(path.split()[0], names["object"])
        elif p.name in ("csv_file", "bundle"):
            value = names["file"]
        elif p.name == "firmware":
            value = names["firmware"]
        elif p.name == "kind":
            value = KINDS.get(path)
        else:
            value = PLAIN.get(p.name)
        if isinstance(p, click.Argument):
            if value is not None or p.required:
                args.append(str(value))
        elif value is not None and not p.is_flag:
            args += [p.opts[0], str(value)]
    return args + FLAGS.get(path, [])


def _commands(group, prefix=""):
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def _plain(text: str, sent) -> str:
    """The output with the command line's own names and anything made fresh taken out."""
    for value in sorted(map(str, sent), key=len, reverse=True):
        text = text.replace(value, "<id>")
    return FRESH.sub("<fresh>", text)


def test_another_organisation_s_commands_see_count_and_change_nothing_of_the_first(
        settings, db, runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # images, labels and any file a command writes land here
    orgs = seed(db, settings)
    # A supplier's sheet for `device import`: one device of parking's profile, or of none.
    (tmp_path / "zqa.csv").write_text("dev_eui,name,profile\n0011223344556677,x,zqa-secret\n")
    (tmp_path / "ghost.csv").write_text("dev_eui,name,profile\n0011223344556677,x,ghost-nm\n")
    (tmp_path / "micropython.bin").write_bytes(b"\xe9" + bytes(4095) + b"MicroPython v1.24.0")
    before = snapshot(db)
    commands = dict(_commands(cli))
    for listed in (NOT_WALKED, PLATFORM_ONLY, GLOBAL_NAMES):
        assert not set(listed) - set(commands), f"no longer commands: {set(listed) - set(commands)}"
    problems, own_names, walked = {}, set(), 0

    def invoke(argv):
        r = runner.invoke(cli, ["--org", "environment", *argv], input="a long password\n" * 3)
        forget_ghost(db)
        return r.exit_code, r.output

    for n, (path, cmd) in enumerate(commands.items()):
        if path in NOT_WALKED:
            continue
        real = _argv(path, cmd, _names(False, orgs.ints, tmp_path, n))
        ghost = _argv(path, cmd, _names(True, orgs.ints, tmp_path, n))
        # What the command was told, to take out of its answer: the sheet names a profile too.
        told, g_told = real, ghost
        if str(tmp_path / "zqa.csv") in real:
            told, g_told = [*real, "zqa-secret"], [*ghost, "ghost-nm"]
        code, out = invoke(path.split() + real)
        walked += 1
        if path in PLATFORM_ONLY:
            if code != 1 or "the platform operator's" not in out:
                problems[path] = f"not refused for an organisation: exit {code}: {out[:200]!r}"
        elif path in GLOBAL_NAMES and code == 1 and TAKEN.match(_plain(out, told)):
            pass  # the name is taken, and nothing more is said of it
        else:
            g_code, g_out = invoke(path.split() + ghost)
            if code != g_code or _plain(out, told) != _plain(g_out, g_told):
                problems[path] = (f"parking's object: exit {code} {out[:160]!r}; a missing one:"
                                  f" exit {g_code} {g_out[:160]!r}")
            elif MARK in _plain(out, [*told, *own_names]):
                problems[path] = f"output names parking's data: {out[:200]!r}"
            if code == 0:  # environment made or named its own object with these names
                own_names.update(v for v in real if MARK in v)
        changed = {t for t, rows in snapshot(db).items() if rows != before[t]}
        if changed:  # said per command; the walk goes on from parking's rows as they are now
            problems[path] = f"changed parking's {sorted(changed)}"
            before = snapshot(db)
    assert not problems, "\n".join(f"fleet {p}: {why}" for p, why in sorted(problems.items()))
    assert walked > 70
