"""The rules and file handling of config.json and board.json, loaded only while in use.

config.py imports this module for each call and drops it again on MicroPython: the checks are
most of the configuration code and are needed only at boot and when a downlink saves a change.
"""

import json

from polylink.settings import BOARD_FILE, CONFIG_FILE, Config, ConfigError
from polylink.store import replace

SENSORS = ("bme280", "ds18b20", "battery")
_PMUS = ("axp192", "axp2101")  # power chips polylink/drivers/pmu.py reads the battery from
_BOARD_KEYS = (
    "name",
    "chip",
    "micropython_build",
    "flash_size",
    "partitions",
    "led_pin",
    "i2c",
    "onewire_pin",
    "battery",
    "sensors",
)

# Defaults for every key a site config may leave out (mqtt_as style: one dict, in the library).
DEFAULTS = {
    "node": None,  # None: derived from the chip's unique id
    "wifi": {"ssid": "", "password": ""},
    "mqtt": {
        "host": "",
        "port": 1883,
        "user": None,
        "password": None,
        "tls": None,
        "keepalive": 60,
    },
    "interval": 60,
    "status_interval": 300,
    "queue_max": 1000,
    "sensors": None,  # None: the board's default sensors
    "bme280_addr": 0x76,
    # Minted by the fleet at registration (fleet/provision.py): the public keys signed updates
    # must verify against, {key id: public key hex}, and the LoRaWAN OTAA keys of a radio board.
    # url: the fleet's base URL for update files; window: [from hour, to hour) UTC or null;
    # min_battery: volts below which an update is declined; check: seconds between asking the
    # fleet for an update (0: offers only); confirm: seconds a new version must run healthy.
    # ca: the CA file HTTPS downloads trust; password: the login for update files
    # (polylink/ota/credential.py; null on nodes provisioned before it: the MQTT password).
    "ota": {"keys": {}, "url": None, "window": None, "min_battery": None, "check": 0,
            "confirm": 300, "ca": None, "password": None},
    "lorawan": None,
    # wifi | lorawan | wifi_first; None: wifi_first on a radio board with lorawan keys, else wifi
    "link_policy": None,
    # A generic image's claim token: {"token": "<id>.<secret>", "port": claim listener, "retry": s}
    "claim": None,
    # Battery duty cycle (docs/firmware.md, Power): sleep "off" runs forever; "deep" wakes every
    # interval, sends, and deep-sleeps. awake_max: seconds a wake may last before the node sleeps
    # with frames still queued; linger: seconds it stays connected after its queue emptied, for
    # downlinks the broker or network server held while it slept.
    "power": {"sleep": "off", "awake_max": 60, "linger": 3},
}
_SLEEP = ("off", "deep")
_LORAWAN_KEYS = (("dev_eui", 16), ("join_eui", 16), ("app_key", 32))
_LORAWAN_ABP = (("dev_eui", 16), ("dev_addr", 8), ("nwk_s_key", 32), ("app_s_key", 32))
# Budgets (TTN fair use by default) and ADR are read by polylink.lorawan.device.Device.
_LORAWAN_ALL = ("dev_eui", "join_eui", "app_key", "dev_addr", "nwk_s_key", "app_s_key",
                "uplink_airtime_s_per_day", "downlinks_per_day", "adr", "confirmed",
                "confirmed_tries")
# Uplink message types that may go as confirmed uplinks (lorawan.confirmed; lw_link.py)
_CONFIRMABLE = ("telemetry", "status", "event", "result")


def _hex(where, value, length=None):
    _str(where, value)
    if (length is not None and len(value) != length) or len(value) % 2:
        raise ConfigError("%s must be %s hex digits, got %r"
                          % (where, length or "an even number of", value))
    for c in value:
        if c not in "0123456789abcdefABCDEF":
            raise ConfigError("%s must be hex digits, got %r" % (where, value))
    return value


def _ota(raw):
    ota = _section(raw, "ota")
    keys = ota["keys"]
    if not isinstance(keys, dict):
        raise ConfigError("config.json: ota.keys must be {key id: public key hex}, got %r"
                          % (keys,))
    for kid in keys:
        _hex("config.json: ota.keys.%s" % kid, keys[kid], 130)
    url = _opt_str("config.json: ota.url", ota["url"])
    if url and not (url.startswith("http://") or url.startswith("https://")):
        raise ConfigError("config.json: ota.url must start with http:// or https://, got %r"
                          % (url,))
    w = ota["window"]
    if w is not None:
        if not isinstance(w, list) or len(w) != 2:
            raise ConfigError("config.json: ota.window must be null or [from hour, to hour] UTC,"
                              " got %r" % (w,))
        _int("config.json: ota.window[0]", w[0], 0, 23)
        _int("config.json: ota.window[1]", w[1], 0, 24)
        if w[0] == w[1]:
            # [5, 5] is an empty window: updates would wait forever. Use null for "any time".
            raise ConfigError("config.json: ota.window [%d, %d] is empty; use null for any time, "
                              "or [22, 4] for 22:00-04:00 UTC" % (w[0], w[1]))
    mb = ota["min_battery"]
    if mb is not None and (isinstance(mb, bool) or not isinstance(mb, (int, float))
                           or not 0 < mb < 6):
        raise ConfigError("config.json: ota.min_battery must be null or volts in 0..6, got %r"
                          % (mb,))
    _int("config.json: ota.check", ota["check"], 0, 604800)
    _int("config.json: ota.confirm", ota["confirm"], 1, 86400)
    if not _opt_str("config.json: ota.ca", ota["ca"]) and url and url.startswith("https://"):
        raise ConfigError("config.json: an https:// ota.url needs ota.ca, the CA file to check"
                          " the server by")
    _opt_str("config.json: ota.password", ota["password"])
    return ota


def _power(raw, interval):
    p = _section(raw, "power")
    if p["sleep"] not in _SLEEP:
        raise ConfigError("config.json: power.sleep must be one of %s, got %r"
                          % (", ".join(_SLEEP), p["sleep"]))
    _int("config.json: power.awake_max", p["awake_max"], 5, 3600)
    _int("config.json: power.linger", p["linger"], 0, 60)
    if p["sleep"] == "deep" and p["linger"] >= p["awake_max"]:
        raise ConfigError("config.json: power.linger (%d s) must be below power.awake_max (%d s)"
                          % (p["linger"], p["awake_max"]))
    if p["sleep"] == "deep" and interval < 2:
        raise ConfigError("config.json: interval must be at least 2 s with power.sleep \"deep\"")
    return p


def _optional(raw, key, known):
    """The section raw[key] (None when absent or null), checked to hold only known keys."""
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError("config.json: %s must be null or a JSON object, got %r" % (key, value))
    for k in value:
        if k not in known:
            raise ConfigError("config.json: unknown key %s.%s" % (key, k))
    return value


def _claim(raw):
    cl = _optional(raw, "claim", ("token", "port", "retry"))
    if cl is None:
        return None
    token = _str("config.json: claim.token", cl.get("token"))
    if "." not in token:
        raise ConfigError("config.json: claim.token must be <id>.<secret>, got %r" % token)
    _int("config.json: claim.port", cl.get("port"), 1, 65535)
    _int("config.json: claim.retry", cl.get("retry", 30), 1, 3600)
    return cl


def _lorawan(raw):
    lw = _optional(raw, "lorawan", _LORAWAN_ALL)
    if lw is None:
        return None
    keys = _LORAWAN_KEYS
    if "dev_addr" in lw and "app_key" not in lw:
        keys = _LORAWAN_ABP  # activation by personalisation: the session keys are given
    for k, n in keys:
        _hex("config.json: lorawan." + k, lw.get(k), n)
    _int("config.json: lorawan.uplink_airtime_s_per_day", lw.get("uplink_airtime_s_per_day", 30),
         1, 86400)
    _int("config.json: lorawan.downlinks_per_day", lw.get("downlinks_per_day", 10), 0, 10000)
    if not isinstance(lw.get("adr", True), bool):
        raise ConfigError("config.json: lorawan.adr must be true or false")
    conf = lw.get("confirmed", ())
    if not isinstance(conf, (list, tuple)) or any(c not in _CONFIRMABLE for c in conf):
        raise ConfigError("config.json: lorawan.confirmed must be a list of %s, got %r"
                          % (", ".join(_CONFIRMABLE), conf))
    _int("config.json: lorawan.confirmed_tries", lw.get("confirmed_tries", 3), 1, 8)
    return lw


_POLICIES = ("wifi", "lorawan", "wifi_first")


def _link_policy(raw, lw, board):
    # A radio board with LoRaWAN keys fails over to LoRaWAN by default; others use WiFi only.
    default = "wifi_first" if lw is not None and board.get("radio") else "wifi"
    p = raw.get("link_policy") or default
    if p not in _POLICIES:
        raise ConfigError("config.json: link_policy must be one of %s, got %r"
                          % (", ".join(_POLICIES), p))
    if p != "wifi" and (lw is None or not board.get("radio")):
        raise ConfigError("config.json: link_policy %r needs a board with a radio and a"
                          " lorawan section" % p)
    return p


def _int(where, value, lo, hi):
    # bool is an int subclass in Python; true/false in JSON is never a valid number here.
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError("%s must be an integer in %d..%d, got %r" % (where, lo, hi, value))
    return value


def _str(where, value) -> str:
    if not isinstance(value, str):
        raise ConfigError("%s must be a string, got %r" % (where, value))
    return value


def _opt_str(where, value):
    return None if value is None else _str(where, value)


def check_node_id(node) -> str:
    """Return node if it is a valid node id ([a-z0-9-]{1,32}), else raise ConfigError."""
    if not isinstance(node, str) or not 1 <= len(node) <= 32:
        raise ConfigError("node must be 1..32 characters of a-z, 0-9 and '-', got %r" % (node,))
    for c in node:
        if not ("a" <= c <= "z" or "0" <= c <= "9" or c == "-"):
            raise ConfigError("node %r: character %r is not one of a-z, 0-9, '-'" % (node, c))
    return node


def validate_board(board) -> dict:
    """Check a board definition (boards/*.json) and return it."""
    if not isinstance(board, dict):
        raise ConfigError("board.json must hold a JSON object")
    for key in _BOARD_KEYS:
        if key not in board:
            raise ConfigError("board.json: missing key %r" % key)
    for key in ("led_pin", "onewire_pin"):
        if board[key] is not None:
            _int("board.json: " + key, board[key], 0, 48)
    i2c = board["i2c"]
    if i2c is not None:
        if not isinstance(i2c, dict) or "sda" not in i2c or "scl" not in i2c:
            raise ConfigError('board.json: i2c must be null or {"sda": pin, "scl": pin}')
        _int("board.json: i2c.sda", i2c["sda"], 0, 48)
        _int("board.json: i2c.scl", i2c["scl"], 0, 48)
    if not isinstance(board.get("led_active_low", False), bool):
        raise ConfigError("board.json: led_active_low must be true or false")
    bat = board["battery"]
    if bat is not None:
        _battery(bat, i2c)
    _sensors("board.json: sensors", board["sensors"], board)
    return board


def _battery(bat, i2c):
    if isinstance(bat, dict) and "pmu" in bat:
        chips = bat["pmu"]
        if not isinstance(chips, list) or not chips or [c for c in chips if c not in _PMUS]:
            raise ConfigError("board.json: battery.pmu must list chips of %s, got %r"
                              % (", ".join(_PMUS), chips))
        _int("board.json: battery.i2c_addr", bat.get("i2c_addr", 0x34), 8, 119)
        if i2c is None:
            raise ConfigError("board.json: battery.pmu is read over I2C but i2c is null")
        return
    if not isinstance(bat, dict) or "adc_pin" not in bat or "divider" not in bat:
        raise ConfigError('board.json: battery must be null, {"adc_pin": pin, "divider": ratio}'
                          ' or {"pmu": [chip, ...]}')
    _int("board.json: battery.adc_pin", bat["adc_pin"], 0, 48)
    div = bat["divider"]
    if not isinstance(div, (int, float)) or isinstance(div, bool) or not 1 <= div <= 20:
        raise ConfigError("board.json: battery.divider must be a ratio in 1..20, got %r" % (div,))
    if "enable_pin" in bat:
        _int("board.json: battery.enable_pin", bat["enable_pin"], 0, 48)
    if bat.get("enable_level", 1) not in (0, 1):
        raise ConfigError("board.json: battery.enable_level must be 0 or 1")


def _sensors(where, names, board):
    if not isinstance(names, list):
        raise ConfigError("%s must be a list of sensor names, got %r" % (where, names))
    for name in names:
        if name not in SENSORS:
            raise ConfigError(
                "%s: unknown sensor %r (known: %s)" % (where, name, ", ".join(SENSORS))
            )
        if name == "bme280" and board.get("i2c") is None:
            raise ConfigError("%s: bme280 needs an I2C bus but the board defines none" % where)
        if name == "ds18b20" and board.get("onewire_pin") is None:
            raise ConfigError("%s: ds18b20 needs a 1-Wire pin but the board defines none" % where)
        if name == "battery" and board.get("battery") is None:
            raise ConfigError("%s: battery needs a battery section but the board's is null" % where)
    return names


def _section(raw, key):
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError("config.json: %s must be a JSON object, got %r" % (key, value))
    for k in value:
        if k not in DEFAULTS[key]:
            raise ConfigError("config.json: unknown key %s.%s" % (key, k))
    merged = dict(DEFAULTS[key])
    merged.update(value)
    return merged


def validate(raw, board, default_node=None) -> Config:
    """Merge raw (the parsed config.json) over DEFAULTS, check every value, return a Config."""
    if not isinstance(raw, dict):
        raise ConfigError("config.json must hold a JSON object")
    for key in raw:
        if key not in DEFAULTS:
            raise ConfigError("config.json: unknown key %r" % key)
    validate_board(board)
    c = Config()
    c.board = board
    node = raw.get("node") or default_node
    if node is None:
        raise ConfigError("config.json: node is missing and no default id is known")
    c.node = check_node_id(node)
    wifi = _section(raw, "wifi")
    c.wifi_ssid = _str("config.json: wifi.ssid", wifi["ssid"])
    c.wifi_password = _str("config.json: wifi.password", wifi["password"])
    mqtt = _section(raw, "mqtt")
    c.mqtt_host = _str("config.json: mqtt.host", mqtt["host"])
    if not c.mqtt_host:
        raise ConfigError("config.json: mqtt.host is empty; set the broker's host name or address")
    c.mqtt_port = _int("config.json: mqtt.port", mqtt["port"], 1, 65535)
    c.mqtt_user = _opt_str("config.json: mqtt.user", mqtt["user"])
    c.mqtt_password = _opt_str("config.json: mqtt.password", mqtt["password"])
    tls = mqtt["tls"]
    if tls is not None and not isinstance(tls, dict):
        raise ConfigError('config.json: mqtt.tls must be null or {"ca": file}, got %r' % (tls,))
    if tls is not None and not _opt_str("config.json: mqtt.tls.ca", tls.get("ca")):
        # mbedTLS without a CA checks nothing: the node would log in to whoever answers.
        raise ConfigError('config.json: mqtt.tls needs "ca", the CA file to check the broker by')
    c.mqtt_tls = tls
    c.keepalive = _int("config.json: mqtt.keepalive", mqtt["keepalive"], 10, 3600)
    c.interval = _int("config.json: interval", raw.get("interval", DEFAULTS["interval"]), 1, 86400)
    c.status_interval = _int(
        "config.json: status_interval",
        raw.get("status_interval", DEFAULTS["status_interval"]),
        10,
        86400,
    )
    c.queue_max = _int(
        "config.json: queue_max", raw.get("queue_max", DEFAULTS["queue_max"]), 8, 100000
    )
    c.bme280_addr = _int(
        "config.json: bme280_addr", raw.get("bme280_addr", DEFAULTS["bme280_addr"]), 0x76, 0x77
    )
    c.ota = _ota(raw)
    c.ota_keys = c.ota["keys"]
    c.lorawan = _lorawan(raw)
    c.link_policy = _link_policy(raw, c.lorawan, board)
    c.claim = _claim(raw)
    c.power = _power(raw, c.interval)
    sensors = raw.get("sensors")
    c.sensors = _sensors(
        "config.json: sensors", board["sensors"] if sensors is None else sensors, board
    )
    return c


def read_json(path, what):
    try:
        f = open(path)
    except OSError:
        raise ConfigError("%s not found at %s" % (what, path)) from None
    try:
        return json.load(f)
    except ValueError as e:
        raise ConfigError("%s at %s is not valid JSON: %s" % (what, path, e)) from None
    finally:
        f.close()


def load_board(root="") -> dict:
    """Read and validate board.json under the flash root."""
    return validate_board(read_json(root + "/" + BOARD_FILE, "board definition"))


def load(root="", default_node=None, board=None) -> Config:
    """Read and validate config.json (and board.json unless given) under the flash root."""
    if board is None:
        board = load_board(root)
    raw = read_json(root + "/" + CONFIG_FILE, "config")
    return validate(raw, board, default_node)


def save(root, changes, section=None) -> None:
    """Merge changes (top-level keys, or keys of one section) into config.json, replacing the
    file atomically; a changed ota section is checked first, so a bad one is never written."""
    path = root + "/" + CONFIG_FILE
    raw = read_json(path, "config")
    if section is None:
        raw.update(changes)
    else:
        part = raw.get(section)
        if not isinstance(part, dict):
            part = raw[section] = {}
        part.update(changes)
    if "ota" in changes or section == "ota":
        _ota(raw)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(raw, f)
    replace(tmp, path)
