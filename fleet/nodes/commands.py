"""Downlinks: COMMAND and CONFIG frames published to a node's down topic, recorded as commands."""


from polylink import codes, proto
from polylink import commands as fw_commands

from fleet import mqtt, topics
from fleet.profiles.jscodec import CodecError, JsCodec
from fleet.providers import downlinks

# Where a downlink can fail on its way, named once for every path a downlink takes.
from fleet.providers.downlinks import (
    BrokerUnavailable,
    BudgetUsed,
    DownlinkError,
    OverLimit,
    TooLarge,
)
from fleet.store import audit as audit_store
from fleet.store import commands as command_store
from fleet.store import profiles as profile_store

# The protocol's command codes (docs/architecture.md, COMMAND.cmd), as the node numbers them.
COMMANDS = {n: getattr(codes, n.upper()) for n in ("reboot", "set_interval", "identify")}
# Bounds in seconds, taken from the node's own rules (firmware/polylink/commands.py) so the fleet
# refuses exactly what a node would: one second (status: ten) to one day.
INTERVAL_MIN, INTERVAL_MAX = fw_commands.INTERVAL_MIN, fw_commands.INTERVAL_MAX
STATUS_INTERVAL_MIN = fw_commands.STATUS_INTERVAL_MIN
# Every field a CONFIG downlink carries (the protocol's CONFIG body, firmware/polylink/proto.py,
# applied and saved by the node's Commands._config): name -> (min, max, unit).
CONFIG_FIELDS = {
    "interval": (INTERVAL_MIN, INTERVAL_MAX, "s"),
    "status_interval": (STATUS_INTERVAL_MIN, INTERVAL_MAX, "s"),
}
__all__ = ["BadCommand", "BrokerUnavailable", "BudgetUsed", "DownlinkError", "OverLimit",
           "TooLarge"]


class BadCommand(DownlinkError, ValueError):
    """The command or its argument is not one a node understands."""


def deliver(db, settings, node_id: str, frame: bytes):
    """Send a frame through the provider the node was last heard on (own broker by default)."""
    if not downlinks.send(db, settings, node_id, frame):
        publish(settings, node_id, frame)


def check_command(cmd: str, arg) -> int | None:
    """Validate a command and its argument; return the argument to send (None for none)."""
    if cmd not in COMMANDS:
        raise BadCommand(f"unknown command {cmd!r}; expected one of {', '.join(COMMANDS)}")
    if cmd == "set_interval":
        if isinstance(arg, bool) or not isinstance(arg, int):
            raise BadCommand("set_interval needs an integer arg: the sampling interval in seconds")
        if not INTERVAL_MIN <= arg <= INTERVAL_MAX:
            raise BadCommand(f"set_interval arg {arg} is outside {INTERVAL_MIN}..{INTERVAL_MAX} s")
        return arg
    if arg is not None:
        raise BadCommand(f"{cmd} takes no arg")
    return None


def check_config(fields: dict) -> dict:
    """The CONFIG fields to send, checked as the node checks them; BadCommand says what is wrong.

    Fields given as None are left out; at least one must remain.
    """
    unknown = set(fields) - set(CONFIG_FIELDS)
    if unknown:
        raise BadCommand(f"unknown config field(s) {', '.join(sorted(unknown))}; a node accepts "
                         f"{', '.join(CONFIG_FIELDS)}")
    out = {}
    for name, (lo, hi, unit) in CONFIG_FIELDS.items():
        value = fields.get(name)
        if value is None:
            continue
        # The node's own test (polylink.commands): an int, never a bool, within the bounds.
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise BadCommand(f"{name} must be a whole number {lo}..{hi} {unit}, got {value!r}")
        out[name] = value
    if not out:
        raise BadCommand("set interval, status interval or both")
    return out


def publish(settings, node_id: str, frame: bytes):
    """Publish one frame to pl/v1/{node}/down with QoS 1 and wait until the broker has it."""
    host, port, username, password = settings.mqtt_login("fleet")
    try:
        mqtt.publish_once(host, port, topics.down(node_id), frame, username, password)
    except mqtt.Unreachable as e:
        raise BrokerUnavailable(f"cannot reach the broker at {host}:{port}: {e}") from None
    except mqtt.NotAcknowledged as e:
        raise BrokerUnavailable(f"the broker at {host}:{port} did not acknowledge the command"
                                f" ({e})") from None


def polylink_only(db, node_id: str) -> None:
    """BadCommand unless the node runs our firmware: other suppliers' devices do not speak the
    Polylink protocol (they are monitored, not commanded or updated)."""
    profile = profile_store.profile_of(db, node_id)
    if profile != "polylink":
        raise BadCommand(f"node {node_id} has device profile {profile!r}: it does not speak the"
                         " Polylink protocol, so it takes no Polylink commands")


def send_command(db, settings, node_id: str, cmd: str, arg=None, created_by=None) -> int:
    """Record a command, publish its COMMAND frame and return its id (cid)."""
    arg = check_command(cmd, arg)
    polylink_only(db, node_id)
    cid, seq = command_store.create_command(db, node_id, cmd, arg, created_by)
    body = {"cid": cid, "cmd": COMMANDS[cmd]}
    if arg is not None:
        body["arg"] = arg
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.COMMAND, seq & 0xFFFF, body)
    deliver(db, settings, node_id, bytes(buf[:n]))
    command_store.mark_command_sent(db, cid, proto.COMMAND)
    return cid


def send_config(db, settings, node_id: str, interval=None, status_interval=None,
                created_by=None) -> int:
    """Record and publish a CONFIG frame (sampling and status intervals in s); return its cid."""
    fields = check_config({"interval": interval, "status_interval": status_interval})
    polylink_only(db, node_id)
    cid, seq = command_store.create_command(db, node_id, "config", fields.get("interval"),
                                            created_by, body=fields)
    body = {"cid": cid, **fields}
    buf = bytearray(proto.MAX_FRAME)
    n = proto.encode(buf, proto.CONFIG, seq & 0xFFFF, body)
    deliver(db, settings, node_id, bytes(buf[:n]))
    command_store.mark_command_sent(db, cid, proto.CONFIG)
    return cid


def send_profile_command(db, settings, node_id: str, name: str, data=None, actor=None) -> dict:
    """Encode one of the node's profile commands with its codec's encodeDownlink and queue it
    with the LoRaWAN provider the node was last heard on; audited. Returns what was sent."""
    profile = profile_store.get_profile(db, profile_store.profile_of(db, node_id))
    known = {c["name"]: c for c in profile["commands"]}
    if name not in known:
        raise BadCommand(f"profile {profile['name']} has no command {name!r}; it has "
                         f"{', '.join(known) or 'none'}")
    if data is not None and not isinstance(data, dict):
        raise BadCommand("data must be an object (the fields encodeDownlink reads)")
    fields = {**(known[name].get("data") or {}), **(data or {})}
    try:
        payload, fport = JsCodec(profile["source"]).encode(fields)
    except CodecError as e:
        raise BadCommand(f"codec of profile {profile['name']}: {e}") from None
    if not isinstance(fport, int) or isinstance(fport, bool) or not 1 <= fport <= 223:
        raise BadCommand(f"encodeDownlink gave fPort {fport!r}; it must give 1..223")
    if not downlinks.send(db, settings, node_id, payload, fport=fport):
        raise BadCommand(f"node {node_id} was not heard through a LoRaWAN provider yet: a"
                         " downlink can only follow its uplinks there")
    sent = {"command": name, "data": fields, "fport": fport, "payload": payload.hex()}
    audit_store.audit(db, actor, "node.profile_command", node_id, sent)
    return sent
