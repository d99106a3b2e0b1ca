"""The broker's TLS listener for nodes beside the loopback-only plain one, and what `fleet run`
refuses before it serves nodes on the network."""

import datetime
import re

import pytest

from fleet import serve
from fleet.broker.server import BrokerError, TLSListener, render_config
from fleet.settings import SettingsError
from fleet.tls import certs


def test_plain_listener_stays_on_loopback_and_tls_gets_the_same_logins(tmp_path):
    tls = TLSListener("0.0.0.0", 8883, tmp_path / "server.pem", tmp_path / "server.key")
    conf = render_config(1883, tmp_path / "broker", auth=True, tls=tls)
    listeners = re.findall(r"^listener (\d+) (\S+)$", conf, re.M)
    assert listeners == [("1883", "127.0.0.1"), ("8883", "0.0.0.0")]
    tls_part = conf[conf.index("listener 8883"):]
    assert f"certfile {tmp_path / 'server.pem'}" in tls_part
    assert "tls_version tlsv1.2" in tls_part
    assert "allow_anonymous false" in tls_part and "password_file" in tls_part
    assert "acl_file" in tls_part and "use_username_as_clientid true" in tls_part
    plain_only = render_config(1883, tmp_path / "b", auth=True)
    assert re.findall(r"^listener (\d+) (\S+)$", plain_only, re.M) == [("1883", "127.0.0.1")]


def test_tls_listener_is_never_anonymous(tmp_path):
    tls = TLSListener("0.0.0.0", 8883, tmp_path / "s.pem", tmp_path / "s.key")
    with pytest.raises(BrokerError, match="never anonymous"):
        render_config(1883, tmp_path / "broker", auth=False, tls=tls)


def test_fleet_run_serves_tls_only_with_https_updates_and_a_valid_certificate(
        settings, monkeypatch):
    monkeypatch.delenv("TLS_DIR", raising=False)
    monkeypatch.setenv("MQTT_TLS_PORT", "18883")
    assert serve.tls_listener(settings) is None, "no certificates: no TLS listener"
    d = certs.init(settings.data_dir / "tls", ["fleet.example.org"])
    monkeypatch.setenv("OTA_URL", "http://fleet.example.org:8000")
    with pytest.raises(SettingsError, match="fetch updates over HTTPS only"):
        serve.tls_listener(settings)
    monkeypatch.setenv("OTA_URL", "https://fleet.example.org")
    tls = serve.tls_listener(settings)
    assert (tls.host, tls.port, tls.certfile) == ("0.0.0.0", 18883, d / "server.pem")
    certs.init(d, ["fleet.example.org"], days=10,
               now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=11))
    with pytest.raises(serve.ServeError, match="expired on"):
        serve.tls_listener(settings)
