"""The provisioning command line behind `make image`, `make flash`, `make deploy` and labels."""

import functools
import os
from pathlib import Path

import click

from . import boards, image, miplib

BUILD = Path(os.environ.get("BUILD_DIR") or "build")


def friendly(fn):
    """Named errors become one-line messages, never a traceback for a user mistake."""
    from fleet.db import StoreError
    from fleet.provision import ProvisionError
    from fleet.settings import SettingsError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (boards.BoardError, image.ImageError, miplib.MipError, ProvisionError,
                StoreError, SettingsError) as e:
            raise click.ClickException(str(e)) from None

    return wrapper


def site_options(fn):
    """What every node of a site shares: WiFi and the broker as the node reaches it."""
    fn = click.option("--mqtt-port", envvar="NODE_MQTT_PORT", default=1883, show_default=True,
                      type=click.IntRange(1, 65535), help="Broker port for the node.")(fn)
    fn = click.option("--mqtt-host", envvar="NODE_MQTT_HOST", required=True,
                      help="Broker address as the node reaches it (env NODE_MQTT_HOST), e.g. "
                           "192.168.1.10 — not 127.0.0.1, which is the node itself.")(fn)
    fn = click.option("--wifi-password", envvar="WIFI_PASSWORD", default="",
                      help="WiFi password (env WIFI_PASSWORD).")(fn)
    fn = click.option("--wifi-ssid", envvar="WIFI_SSID", default="",
                      help="WiFi network name (env WIFI_SSID).")(fn)
    return fn


@click.group()
def cli():
    """Polylink provisioning: build, flash and label nodes.

    Settings of the fleet come from the environment (DATA_DIR, ...), as for `fleet`.

    Example: python -m provisioning image --board HELTEC_V3 --node lamp-42 --mqtt-host 10.0.0.2
    """


def issue_identity(node: str | None, board: str) -> dict:
    """Register the node (or give a registered one a new password) in the fleet's store."""
    from fleet import db as store
    from fleet import provision
    from fleet.settings import from_env

    settings = from_env()
    db = store.open_db(settings.db_path)
    try:
        return provision.issue(db, settings, node, board, actor="provisioning")
    finally:
        db.conn.close()


def write_image(identity: dict, board_name: str, wifi_ssid, wifi_password, mqtt_host, mqtt_port,
                mip_index, mip_cache) -> tuple[Path, dict, bytes]:
    from fleet.provision import node_config

    config = node_config(identity, mqtt_host, mqtt_port, wifi_ssid, wifi_password)
    board, data = image.build(board_name, config, mip_index, Path(mip_cache))
    out = BUILD / "images" / f"{identity['node_id']}.{board_name}.littlefs.bin"
    out.parent.mkdir(parents=True, exist_ok=True)
    # The image holds the node's secrets: readable by this user only.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return out, board, data


@cli.command("image")
@click.option("--board", required=True, help="Board name from boards/.")
@click.option("--node", help="Node id; registered now if new. Empty: a random id.")
@site_options
@click.option("--mip-index", default=miplib.INDEX, show_default=True,
              help="micropython-lib package index.")
@click.option("--mip-cache", default=str(BUILD / "mip-cache"), show_default=True,
              help="Where fetched packages are kept (a warm cache needs no network).")
@friendly
def image_command(board, node, wifi_ssid, wifi_password, mqtt_host, mqtt_port, mip_index,
                  mip_cache):
    """Build a node's LittleFS image: app (.mpy), config with its identity, board file, packages.

    A registered node gets a new MQTT password (the fleet keeps only hashes).

    Example: NODE_MQTT_HOST=10.0.0.2 python -m provisioning image --board HELTEC_V3 --node lamp-42
    """
    boards.load(board)  # a bad board name fails before anything is registered
    identity = issue_identity(node, board)
    out, b, data = write_image(identity, board, wifi_ssid, wifi_password, mqtt_host, mqtt_port,
                               mip_index, mip_cache)
    fs = boards.fs_partition(b)
    files = image.read_back(data)
    click.echo(f"image {out}: node {identity['node_id']}, {len(files)} files, "
               f"{sum(map(len, files.values())) // 1024} KB of {fs['size'] // 1024} KB; "
               f"write at {fs['offset']:#x}")
