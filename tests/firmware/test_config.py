"""config.py: defaults, validation messages, the shipped board file, atomic save."""

import json

from _check import eq, raises
from _fw import board, boards_dir, rmtree, tmpdir
from polylink import config
from polylink.config import ConfigError


def _raw(**kw):
    raw = {"node": "n-1", "mqtt": {"host": "broker.local"}}
    raw.update(kw)
    return raw


def test_defaults_fill_what_the_file_leaves_out():
    c = config.validate(_raw(), board())
    eq(c.node, "n-1")
    eq(c.mqtt_port, 1883)
    eq(c.keepalive, 60)
    eq(c.interval, 60)
    eq(c.status_interval, 300)
    eq(c.sensors, ["bme280", "ds18b20", "battery"], "board's default sensors")
    eq(c.mqtt_tls, None)


def test_site_values_override_defaults():
    c = config.validate(
        _raw(
            interval=15,
            sensors=["bme280"],
            mqtt={"host": "h", "port": 8883, "tls": {"ca": "ca.pem"}, "user": "u", "password": "p"},
        ),
        board(),
    )
    eq(
        (c.interval, c.sensors, c.mqtt_port, c.mqtt_tls, c.mqtt_user),
        (15, ["bme280"], 8883, {"ca": "ca.pem"}, "u"),
    )


def test_bad_values_say_what_is_wrong():
    cases = (
        (_raw(interval=0), "interval"),
        (_raw(interval="60"), "interval"),
        (_raw(interval=True), "interval"),
        (_raw(node="Bad_Node"), "node"),
        (_raw(node="x" * 33), "node"),
        (_raw(mqtt={"host": "h", "port": 70000}), "mqtt.port"),
        (_raw(mqtt={"host": ""}), "mqtt.host"),
        (_raw(mqtt={"host": "h", "qos": 2}), "mqtt.qos"),
        (_raw(colour="red"), "colour"),
        (_raw(sensors=["bme680"]), "bme680"),
        (_raw(wifi="open"), "wifi"),
        # TLS without a CA checks nothing on mbedTLS: refused, not run unchecked.
        (_raw(mqtt={"host": "h", "tls": {}}), "mqtt.tls needs \"ca\""),
        (_raw(mqtt={"host": "h", "tls": {"ca": None}}), "mqtt.tls needs \"ca\""),
        (_raw(ota={"url": "https://fleet.example/ota/v1"}), "needs ota.ca"),
    )
    for raw, word in cases:
        e = raises(ConfigError, config.validate, raw, board())
        if word not in str(e):
            raise AssertionError("message %r does not name %r" % (str(e), word))


def test_sensor_needs_board_support():
    b = board()
    b["battery"] = None
    e = raises(ConfigError, config.validate, _raw(sensors=["battery"]), b)
    eq("battery" in str(e), True)


def test_config_error_is_a_value_error():
    eq(issubclass(ConfigError, ValueError), True)


def test_node_id_defaults_to_the_chip_id():
    raw = _raw()
    del raw["node"]
    eq(config.validate(raw, board(), default_node="pl-a1b2").node, "pl-a1b2")
    raises(ConfigError, config.validate, raw, board())


def test_shipped_board_is_valid_and_has_no_battery():
    with open(boards_dir() + "/ESP32_GENERIC.json") as f:
        b = config.validate_board(json.load(f))
    eq(b["micropython_build"], "ESP32_GENERIC")
    eq(b["led_pin"], 2)
    eq((b["i2c"]["sda"], b["i2c"]["scl"]), (21, 22))
    eq(b["battery"], None, "DevKitC has no divider")
    c = config.validate(_raw(), b)
    eq(c.sensors, ["bme280", "ds18b20"])


def test_board_missing_key_is_named():
    b = board()
    del b["chip"]
    e = raises(ConfigError, config.validate_board, b)
    eq("chip" in str(e), True)


def test_load_reports_missing_and_broken_files_and_save_persists():
    d = tmpdir("cfg")
    try:
        e = raises(ConfigError, config.load, d)
        eq("not found" in str(e), True)
        with open(d + "/board.json", "w") as f:
            json.dump(board(), f)
        with open(d + "/config.json", "w") as f:
            f.write("{not json")
        e = raises(ConfigError, config.load, d)
        eq("not valid JSON" in str(e), True)
        with open(d + "/config.json", "w") as f:
            json.dump(_raw(), f)
        eq(config.load(d).interval, 60)
        config.save(d, {"interval": 30})
        eq(config.load(d).interval, 30)
        eq(config.load(d).node, "n-1")
    finally:
        rmtree(d)


def test_power_section_defaults_and_checks():
    c = config.validate(_raw(), board())
    eq(c.power, {"sleep": "off", "awake_max": 60, "linger": 3})
    c = config.validate(_raw(interval=300, power={"sleep": "deep", "linger": 0}), board())
    eq((c.power["sleep"], c.power["awake_max"], c.power["linger"]), ("deep", 60, 0))
    cases = (
        (_raw(power={"sleep": "light"}), "power.sleep must be one of off, deep"),
        (_raw(power={"sleep": True}), "power.sleep"),
        (_raw(power={"sleep": "deep", "awake_max": 2}), "power.awake_max"),
        (_raw(power={"awake_max": "60"}), "power.awake_max"),
        (_raw(power={"linger": 61}), "power.linger"),
        (_raw(power={"sleep": "deep", "awake_max": 10, "linger": 10}), "below power.awake_max"),
        (_raw(interval=1, power={"sleep": "deep"}), "at least 2 s"),
        (_raw(power={"nap": 1}), "unknown key power.nap"),
        (_raw(power="deep"), "power must be a JSON object"),
    )
    for raw, words in cases:
        e = raises(ConfigError, config.validate, raw, board())
        if words not in str(e):
            raise AssertionError("%r: message %r does not mention %r" % (raw, str(e), words))
