"""Every code the node and the fleet share comes from firmware/polylink/codes.py: the fleet's name
tables and the node's own copies (kept where loading codes.py would cost the node heap) match it."""

import ast
from pathlib import Path

from polylink import codes, commands, crash, node
from polylink.ota import agent, runtime, slots
from polylink_host import hal as host_hal
from polylink_host import unixhal

from fleet.nodes import commands as downlink
from fleet.nodes import views as nodes
from fleet.ota import releases as ota
from fleet.ota import rollouts

CODES = Path(codes.__file__)
GROUPS = {"OTA_UP state": "state", "OTA_UP reason": "reason", "COMMAND cmd": "cmd",
          "STATUS reset": "reset", "OTA keys": "keys"}


def groups() -> dict[str, dict[str, int]]:
    """codes.py's names by the comment heading their block: {group: {name: value}}."""
    lines = CODES.read_text().splitlines()
    out: dict[str, dict[str, int]] = {g: {} for g in GROUPS.values()}
    for stmt in ast.parse(CODES.read_text()).body:
        if not isinstance(stmt, ast.Assign):
            continue
        name = stmt.targets[0].id  # type: ignore[attr-defined]
        value = ast.literal_eval(stmt.value)
        assert type(value) is int, f"{name} is not a plain int"
        i = stmt.lineno - 2
        while lines[i].strip():  # up to the block's heading comment
            i -= 1
        heading = lines[i + 1]
        group = next((g for h, g in GROUPS.items() if heading.startswith("# " + h)), None)
        assert group, f"{name}: block heading {heading!r} is not one of {list(GROUPS)}"
        out[group][name] = value
    return out


def test_codes_are_unique_within_each_group():
    for group, names in groups().items():
        assert len(set(names.values())) == len(names), f"{group}: two names share a code"


def test_every_group_has_codes():
    g = groups()
    assert all(g.values()), g
    assert sum(len(v) for v in g.values()) == len(
        [n for n in vars(codes) if n.isupper()]), "a code outside the known blocks"


def test_the_fleet_names_exactly_the_ota_states_and_reasons():
    g = groups()
    assert set(rollouts.REPORT_STATES) == set(g["state"].values())
    assert {v: k.lower() for k, v in g["state"].items()} == rollouts.REPORT_STATES
    assert set(rollouts.REASONS) == set(g["reason"].values())


def test_the_fleet_sends_the_node_s_command_numbers():
    g = groups()
    assert downlink.COMMANDS == {k.lower(): v for k, v in g["cmd"].items()}
    for name, value in g["cmd"].items():
        assert getattr(commands, name) == value, f"commands.{name}"


def test_the_fleet_names_every_reset_cause_the_hals_report():
    g = groups()
    assert set(nodes.RESET_CAUSES) == set(g["reset"].values())
    for name, value in g["reset"].items():
        assert getattr(host_hal, name) == value, f"polylink_host.hal.{name}"
    assert node._DEEPSLEEP_RESET == codes.DEEPSLEEP_RESET
    assert crash.WDT_RESET == codes.WDT_RESET
    for name in ("PWRON_RESET", "SOFT_RESET"):
        assert getattr(unixhal, name) == getattr(codes, name), f"polylink_host.unixhal.{name}"


def test_node_and_fleet_trust_the_same_number_of_keys():
    assert ota.MAX_KEYS == agent.MAX_KEYS == codes.MAX_KEYS


def test_the_ota_modules_use_the_codes():
    for name, value in groups()["state"].items():
        assert getattr(agent, name) == value, f"agent.{name}"
    for name in ("BAD_SIGNATURE", "UNKNOWN_KEY", "HASH_MISMATCH", "BOARD", "MICROPYTHON",
                 "DOWNLOAD", "STORAGE", "LOW_BATTERY", "WINDOW", "BUSY", "BAD_MANIFEST",
                 "RUNTIME_ROLLED_BACK", "NO_MEMORY"):
        assert getattr(agent, name) == getattr(codes, name), f"agent.{name}"
    for name in ("DOWNLOAD", "HASH_MISMATCH", "STORAGE"):
        assert getattr(runtime, name) == getattr(codes, name), f"runtime.{name}"
    assert (slots.CRASH_LOOP, slots.NOT_CONFIRMED) == (codes.CRASH_LOOP, codes.NOT_CONFIRMED)


def test_no_fleet_module_spells_a_shared_table_out_again():
    # A copied table is a dict literal whose keys run 1, 2, 3 ... with string values.
    for path in sorted((Path(__file__).resolve().parents[1] / "fleet").rglob("*.py")):
        for n in ast.walk(ast.parse(path.read_text())):
            if isinstance(n, ast.Dict) and len(n.keys) >= 3 and all(
                    isinstance(k, ast.Constant) and type(k.value) is int for k in n.keys):
                keys = [k.value for k in n.keys]  # type: ignore[union-attr]
                assert keys[:3] != [1, 2, 3], f"{path}:{n.lineno} copies a code table"
