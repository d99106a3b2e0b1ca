"""`fleet provision ...`: the commands behind `make image`, `make flash`, `make flash-batch`,
`make deploy`, `make merged-image` and `make label`.

The host tools (provisioning/) build and write the images; this module adds what needs the fleet:
registering the node (or a new password for it), its config, claim tokens, watching it report in.
"""

import os
import shutil
import time
from pathlib import Path

import click

from fleet.console import one_line, open_store
from fleet.identity import claims, provision
from fleet.settings import SettingsError, from_env
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store.base import StoreError, UnknownNode, connect
from provisioning import boards, flash, image, label, miplib

BUILD = Path(os.environ.get("BUILD_DIR") or "build")

# Named errors become one-line messages, never a traceback for a user mistake.
friendly = one_line(boards.BoardError, image.ImageError, miplib.MipError,
                    provision.ProvisionError, StoreError, SettingsError, flash.FlashError)


def site_options(fn):
    """What every node of a site shares: WiFi and the broker as the node reaches it."""
    fn = click.option("--mqtt-port", envvar="NODE_MQTT_PORT", default=1883, show_default=True,
                      type=click.IntRange(1, 65535), help="Broker port for the node.")(fn)
    fn = click.option("--mqtt-host", envvar="NODE_MQTT_HOST",
                      help="Broker address as the node reaches it (env NODE_MQTT_HOST), e.g. "
                           "192.168.1.10 — not 127.0.0.1, which is the node itself.")(fn)
    fn = click.option("--wifi-password", envvar="WIFI_PASSWORD", default="",
                      help="WiFi password (env WIFI_PASSWORD).")(fn)
    fn = click.option("--wifi-ssid", envvar="WIFI_SSID", default="",
                      help="WiFi network name (env WIFI_SSID).")(fn)
    return fn


def mip_options(cache_help: str = "Where fetched packages are kept."):
    """--mip-index and --mip-cache: where the board's micropython-lib packages come from."""

    def decorate(fn):
        fn = click.option("--mip-cache", default=str(BUILD / "mip-cache"), show_default=True,
                          help=cache_help)(fn)
        return click.option("--mip-index", default=miplib.INDEX, show_default=True,
                            help="micropython-lib package index.")(fn)

    return decorate


@click.group("provision")
def cli():
    """Build, flash and label nodes (make image, make flash, ...).

    Settings of the fleet come from the environment (DATA_DIR, ...), as for every command.

    Example: fleet provision image --board HELTEC_V3 --node lamp-42 --mqtt-host 10.0.0.2
    """


def need_mqtt_host(mqtt_host: str | None) -> str:
    if not mqtt_host:
        raise click.UsageError("say where nodes find the broker: NODE_MQTT_HOST=192.168.1.10 "
                               "(or --mqtt-host), the broker's address as the node reaches it")
    return mqtt_host


def issue_identity(node: str | None, board: str, mac: str | None = None) -> dict:
    """Register the node (or give a registered one a new password) in the fleet's store."""
    settings = from_env()
    db = open_store()
    try:
        return provision.issue(db, settings, node, board, actor="provisioning", mac=mac)
    finally:
        db.conn.close()


def write_image(identity: dict, board: dict, packages: dict, wifi_ssid, wifi_password,
                mqtt_host, mqtt_port) -> tuple[Path, bytes]:
    settings = from_env()
    ca = provision.node_ca(settings)  # the fleet serves nodes over TLS: the image trusts its CA
    mqtt_port = provision.node_mqtt_port(settings, mqtt_port)
    config = provision.node_config(identity, mqtt_host, mqtt_port, wifi_ssid, wifi_password,
                                   tls=bool(ca))
    data = image.build(board, config, {**packages, **provision.node_tls_files(ca)})
    out = BUILD / "images" / f"{identity['node_id']}.{board['name']}.littlefs.bin"
    write_private(out, data)  # the image holds the node's secrets
    return out, data


def write_private(out: Path, data: bytes) -> None:
    """Write a file only this user may read (an image holding a node's secrets or a token)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@cli.command("image")
@click.option("--board", required=True, help="Board name from boards/.")
@click.option("--node", help="Node id; registered now if new. Empty: a random id.")
@site_options
@mip_options("Where fetched packages are kept (a warm cache needs no network).")
@click.option("--claim-token", envvar="CLAIM_TOKEN",
              help="Build a generic image that claims its identity with this token on first boot "
                   "(`fleet claim token`); no node is registered now.")
@click.option("--claim-port", envvar="CLAIM_PORT", type=click.IntRange(1, 65535),
              help="The broker's claim listener port, as the node reaches it (env CLAIM_PORT).")
@friendly
def image_command(board, node, wifi_ssid, wifi_password, mqtt_host, mqtt_port, mip_index,
                  mip_cache, claim_token, claim_port):
    """Build a node's LittleFS image: app (.mpy), config with its identity, board file, packages.

    A registered node gets a new MQTT password (the fleet keeps only hashes).

    Example: NODE_MQTT_HOST=10.0.0.2 fleet provision image --board HELTEC_V3 --node lamp-42
    """
    # Everything that can fail without touching the fleet comes first: a failed build must not
    # leave a registered node whose password nobody has.
    b = boards.load(board)
    need_mqtt_host(mqtt_host)
    packages = image.fetch_packages(b, mip_index, Path(mip_cache))
    if claim_token:
        generic_image(b, packages, claim_token, claim_port, node, wifi_ssid, wifi_password,
                      mqtt_host)
        return
    identity = issue_identity(node, board)
    out, data = write_image(identity, b, packages, wifi_ssid, wifi_password, mqtt_host,
                            mqtt_port)
    fs = boards.fs_partition(b)
    files = image.read_back(data)
    click.echo(f"image {out}: node {identity['node_id']}, {len(files)} files, "
               f"{sum(map(len, files.values())) // 1024} KB of {fs['size'] // 1024} KB; "
               f"write at {fs['offset']:#x}")


def generic_image(board, packages, token, claim_port, node, wifi_ssid, wifi_password, mqtt_host):
    if node:
        raise click.UsageError("--node and --claim-token exclude each other: a generic image "
                               "gets its identity on first boot")
    if not claim_port:
        raise click.UsageError("a generic image needs --claim-port (env CLAIM_PORT)")
    token_id = token.partition(".")[0]
    config = claims.generic_config(token, mqtt_host, claim_port, wifi_ssid, wifi_password)
    data = image.build(board, config, packages)
    out = BUILD / "images" / f"generic.{board['name']}.{token_id}.littlefs.bin"
    write_private(out, data)  # it holds the token
    click.echo(f"generic image {out}: claims with token {token_id}; flash it onto any number of "
               f"{board['name']} boards (write at {boards.fs_partition(board)['offset']:#x})")


def reported_since(node_id: str, since: float):
    """A check for watch(): has the fleet heard from the node since `since`?"""
    path = from_env().db_path

    def check() -> bool:
        db = connect(path)
        try:
            last_seen = node_store.get_node(db, node_id)["last_seen"]
        except UnknownNode:
            return False
        finally:
            db.conn.close()
        return bool(last_seen and last_seen >= since)

    return check


def flash_one(board_name, port, node, firmware, site: dict, mip_index, mip_cache, timeout,
              echo=click.echo) -> str:
    """Flash one board end to end; return the node id. Raises FlashError and friends."""
    board = boards.load(board_name)
    flash.check_port(port)
    need_mqtt_host(site["mqtt_host"])
    if firmware:
        flash.check_version(flash.micropython_version(Path(firmware)), f"FIRMWARE {firmware}")
    echo(f"{port}: asking the chip what it is")
    found = flash.probe(port)
    flash.check_board(board, found, port)
    echo(f"{port}: {found.description}, {found.flash_size // 1048576} MB flash, MAC {found.mac}")
    if firmware:
        echo(f"{port}: writing MicroPython {firmware}")
        flash.write_firmware(board, port, Path(firmware))
    packages = image.fetch_packages(board, mip_index, Path(mip_cache))
    identity = issue_identity(node, board_name, found.mac)
    out, _ = write_image(identity, board, packages, site["wifi_ssid"], site["wifi_password"],
                         site["mqtt_host"], site["mqtt_port"])
    fs = boards.fs_partition(board)
    echo(f"{port}: writing node {identity['node_id']}'s filesystem at {fs['offset']:#x}")
    started = time.time()
    flash.write_image(board, port, out, fs["offset"])
    echo(f"{port}: waiting for {identity['node_id']} to report in (up to {timeout:.0f} s)")
    flash.watch(port, reported_since(identity["node_id"], started), timeout, echo)
    echo(f"{port}: node {identity['node_id']} is online")
    return identity["node_id"]


def flash_options(fn):
    fn = click.option("--timeout", default=120.0, show_default=True,
                      help="Seconds to wait for the node to report in.")(fn)
    fn = mip_options()(fn)
    fn = click.option("--firmware", type=click.Path(dir_okay=False),
                      help="MicroPython firmware .bin to write first (erases the flash).")(fn)
    return site_options(fn)


@cli.command("flash")
@click.option("--board", required=True, help="Board name from boards/.")
@click.option("--port", default="", help="Serial port, e.g. /dev/ttyUSB0.")
@click.option("--node", help="Node id; registered now if new. Empty: a random id.")
@flash_options
@friendly
def flash_command(board, port, node, firmware, wifi_ssid, wifi_password, mqtt_host, mqtt_port,
                  mip_index, mip_cache, timeout):
    """Flash one board: MicroPython (with --firmware), the node's image, then watch it report in.

    Example: fleet provision flash --board HELTEC_V3 --port /dev/ttyUSB0 --firmware mp.bin
    """
    site = {"wifi_ssid": wifi_ssid, "wifi_password": wifi_password, "mqtt_host": mqtt_host,
            "mqtt_port": mqtt_port}
    flash_one(board, port, node, firmware, site, mip_index, mip_cache, timeout)


@cli.command("batch")
@click.option("--board", required=True, help="Board name from boards/ (all boards alike).")
@click.option("--port", "ports", multiple=True, required=True,
              help="Serial port of one board; repeat for each board.")
@flash_options
@friendly
def batch_command(board, ports, firmware, wifi_ssid, wifi_password, mqtt_host, mqtt_port,
                  mip_index, mip_cache, timeout):
    """Flash many boards in a row (new node ids), with progress per board and a summary.

    Example: fleet provision batch --board ESP32_GENERIC --port /dev/ttyUSB0 --port /dev/ttyUSB1
    """
    need_mqtt_host(mqtt_host)
    site = {"wifi_ssid": wifi_ssid, "wifi_password": wifi_password, "mqtt_host": mqtt_host,
            "mqtt_port": mqtt_port}
    done, failed = [], []
    for i, port in enumerate(ports, 1):
        click.echo(f"[{i}/{len(ports)}] {port}")
        try:
            node = flash_one(board, port, None, firmware, site, mip_index, mip_cache, timeout,
                             echo=lambda s: click.echo(f"  {s}"))
        except (flash.FlashError, boards.BoardError, image.ImageError, miplib.MipError,
                ValueError) as e:
            failed.append((port, str(e).splitlines()[0]))
            click.echo(f"  FAILED: {e}")
        else:
            done.append((port, node))
    click.echo(f"summary: {len(ports)} boards, {len(done)} ok, {len(failed)} failed")
    for port, node in done:
        click.echo(f"  ok      {port}  {node}")
    for port, why in failed:
        click.echo(f"  failed  {port}  {why}")
    if failed:
        raise SystemExit(1)


@cli.command("deploy")
@click.option("--port", default="", help="Serial port of a board that already runs MicroPython.")
@click.option("--board", default="",
              help="Board name from boards/: copy only what it carries (no LoRaWAN code on a "
                   "WiFi-only board). Empty: every app file.")
@friendly
def deploy_command(port, board):
    """Copy the app files that changed to a board running MicroPython (mpremote), then reset.

    config.json and board.json on the board are left as they are.

    Example: fleet provision deploy --port /dev/ttyUSB0 --board ESP32_GENERIC
    (make deploy PORT=/dev/ttyUSB0 BOARD=ESP32_GENERIC)
    """
    flash.check_port(port)
    app_dir = BUILD / "deploy"
    shutil.rmtree(app_dir, ignore_errors=True)  # no stale module from an older build
    for name, data in image.compile_app(boards.load(board) if board else None).items():
        path = app_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    out = flash.deploy_files(port, app_dir)
    total = sum(1 for p in app_dir.rglob("*") if p.is_file())
    same = len([line for line in out.splitlines() if line.startswith("Up to date")])
    click.echo(f"{port}: {total - same} files copied, {same} up to date; board reset")


@cli.command("merged-image")
@click.option("--board", required=True, help="Board name from boards/.")
@click.option("--firmware", required=True, type=click.Path(dir_okay=False),
              help="MicroPython firmware .bin for the board.")
@click.option("--node", help="Node id (one node's image); empty: a new node.")
@site_options
@mip_options()
@friendly
def merged_image_command(board, firmware, node, wifi_ssid, wifi_password, mqtt_host, mqtt_port,
                         mip_index, mip_cache):
    """One file for a factory programmer: MicroPython and the node's filesystem (esptool merge-bin).

    Example: fleet provision merged-image --board ESP32_GENERIC --firmware ESP32_GENERIC.bin
    """
    b = boards.load(board)
    need_mqtt_host(mqtt_host)
    flash.check_version(flash.micropython_version(Path(firmware)), f"FIRMWARE {firmware}")
    packages = image.fetch_packages(b, mip_index, Path(mip_cache))
    identity = issue_identity(node, board)
    fs_path, _ = write_image(identity, b, packages, wifi_ssid, wifi_password, mqtt_host,
                             mqtt_port)
    fs = boards.fs_partition(b)
    out = BUILD / "merged" / f"{identity['node_id']}.{board}.merged.bin"
    out.parent.mkdir(parents=True, exist_ok=True)
    flash.run_tool("esptool", [
        "--chip", b["chip"], "merge-bin", "-o", str(out),
        "--flash-size", f"{b['flash_size'] // 1048576}MB",
        hex(flash.FIRMWARE_OFFSET[b["chip"]]), str(firmware), hex(fs["offset"]), str(fs_path)])
    os.chmod(out, 0o600)  # it holds the node's secrets
    click.echo(f"merged image {out}: write it at 0x0 (esptool write-flash 0x0 {out.name})")


@cli.command("label")
@click.option("--node", required=True, help="Node id.")
@click.option("--fleet-url", envvar="FLEET_URL", default="http://127.0.0.1:8000",
              show_default=True, help="The fleet's web address as people reach it (env FLEET_URL).")
@friendly
def label_command(node, fleet_url):
    """Write a printable SVG label with a QR code that opens the node's page.

    Example: FLEET_URL=https://fleet.city fleet provision label --node lamp-42
    """
    db = open_store()
    try:
        n = node_store.get_node(db, node)
        cred = identity_store.get_credentials(db, node) or {}
    finally:
        db.conn.close()
    out = BUILD / "labels" / f"{node}.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(label.label_svg(node, fleet_url, n["board"], cred.get("dev_eui")))
    click.echo(f"label {out}: QR code opens {label.node_url(fleet_url, node)}")
