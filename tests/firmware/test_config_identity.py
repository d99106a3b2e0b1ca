"""config.json carries the identity provisioning minted: trusted OTA keys and LoRaWAN keys."""

from _check import eq, raises
from _fw import board
from polylink import config
from polylink.config import ConfigError

_LW = {"dev_eui": "02A1B2C3D4E5F601", "join_eui": "0000000000000000",
       "app_key": "00112233445566778899AABBCCDDEEFF"}


def _raw(**kw):
    raw = {"node": "n-1", "mqtt": {"host": "broker.local", "user": "n-1", "password": "pw"}}
    raw.update(kw)
    return raw


def test_identity_defaults_to_no_keys():
    c = config.validate(_raw(), board())
    eq((c.ota_keys, c.lorawan), ({}, None))


def test_minted_keys_are_kept():
    c = config.validate(_raw(ota={"keys": {"k1": "04" + "ab" * 64}}, lorawan=dict(_LW)), board())
    eq(c.ota_keys, {"k1": "04" + "ab" * 64})
    eq(c.lorawan["dev_eui"], "02A1B2C3D4E5F601")


def test_bad_keys_say_which():
    cases = (
        (_raw(ota={"keys": ["ab"]}), "ota.keys"),
        (_raw(ota={"keys": {"k1": "xyz1"}}), "ota.keys.k1"),
        (_raw(ota={"trust": {}}), "ota.trust"),
        (_raw(lorawan={"dev_eui": "02A1"}), "lorawan.dev_eui"),
        (_raw(lorawan=dict(_LW, app_key="00" * 15)), "lorawan.app_key"),
        (_raw(lorawan=dict(_LW, nwk_key="00" * 16)), "lorawan.nwk_key"),
        (_raw(claim={"token": "nodot", "port": 1884}), "claim.token"),
        (_raw(claim={"token": "ct1.s", "port": 0}), "claim.port"),
        (_raw(claim={"token": "ct1.s", "port": 1884, "retry": 0}), "claim.retry"),
        (_raw(claim={"token": "ct1.s", "port": 1884, "colour": 1}), "claim.colour"),
    )
    for raw, word in cases:
        e = raises(ConfigError, config.validate, raw, board())
        if word not in str(e):
            raise AssertionError("message %r does not name %r" % (str(e), word))


def test_lorawan_abp_and_budgets_accepted_and_checked():
    abp = {"dev_eui": "02A1B2C3D4E5F601", "dev_addr": "26011BDA", "nwk_s_key": "00" * 16,
           "app_s_key": "11" * 16, "uplink_airtime_s_per_day": 60, "downlinks_per_day": 5}
    c = config.validate(_raw(lorawan=dict(abp)), board())
    eq(c.lorawan["dev_addr"], "26011BDA")
    c = config.validate(_raw(lorawan=dict(abp, confirmed=["event"], confirmed_tries=8)), board())
    eq((c.lorawan["confirmed"], c.lorawan["confirmed_tries"]), (["event"], 8))
    for bad, where in (
        (dict(abp, dev_addr="26011B"), "lorawan.dev_addr"),
        (dict(abp, uplink_airtime_s_per_day=0), "lorawan.uplink_airtime_s_per_day"),
        (dict(abp, adr="yes"), "lorawan.adr"),
        (dict(abp, confirmed=["alarm"]), "lorawan.confirmed"),
        (dict(abp, confirmed="event"), "lorawan.confirmed"),
        (dict(abp, confirmed_tries=9), "lorawan.confirmed_tries"),
    ):
        e = raises(ConfigError, config.validate, _raw(lorawan=bad), board())
        if where not in str(e):
            raise AssertionError("%r does not name %s" % (str(e), where))


def test_generic_image_config_has_a_claim_and_no_login():
    raw = {"mqtt": {"host": "broker.local"}, "claim": {"token": "ct1.secret", "port": 1884}}
    c = config.validate(raw, board(), default_node="pl-a1b2")
    eq((c.node, c.claim["port"], c.mqtt_user), ("pl-a1b2", 1884, None))
