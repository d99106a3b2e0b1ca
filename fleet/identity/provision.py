"""Registering a node: mint its identity (MQTT login, LoRaWAN keys, trusted OTA keys), revoke it.

The secrets are returned once, to whoever registered the node; the store keeps only the MQTT
password's hash. The AppKey is kept because the LoRaWAN network server (TTN, ChirpStack) must be
given it when the device is registered there; it is never shown again by the UI or the API.
"""

import json
import os
import secrets
from pathlib import Path

from polylink.ota.credential import file_password

from fleet import topics
from fleet.broker import auth as brokerauth
from fleet.settings import node_tls_from_env
from fleet.store import audit as audit_store
from fleet.store import identity as identity_store
from fleet.store import nodes as node_store
from fleet.store import orgs as orgs_store
from fleet.store import ota as ota_store
from fleet.store.base import StoreError, valid_node_id
from fleet.store.scope import org_of_scope
from fleet.tls import certs
from provisioning import boards, image, miplib

# A LoRaWAN 1.0.x JoinEUI (AppEUI) for the whole fleet; all zeros is what TTN and ChirpStack
# accept when no join server is used. Override with LORAWAN_JOIN_EUI in the environment.
DEFAULT_JOIN_EUI = "0000000000000000"
OTA_KEYS_FILE = "ota/trusted_keys.json"
# The CA certificate a node trusts for MQTT over TLS and OTA over HTTPS, on its filesystem.
NODE_CA_FILE = "ca.pem"


class ProvisionError(ValueError):
    """A node cannot be registered, revoked or rotated as asked."""


def check_new_node_id(node_id: str) -> str:
    """Return node_id if a node may be registered under it, else raise ProvisionError."""
    if not isinstance(node_id, str) or not valid_node_id(node_id):
        raise ProvisionError(f"node id {node_id!r} must be 1-32 characters of a-z, 0-9 and '-'")
    if node_id.startswith(brokerauth.RESERVED_PREFIX):
        raise ProvisionError(f"node ids starting with {brokerauth.RESERVED_PREFIX!r} are "
                             "reserved for the fleet's own services")
    if node_id == topics.DATA:
        raise ProvisionError(f"node id {node_id!r} is reserved: pl/v1/{node_id}/ carries the"
                             " exported readings of every node")
    return node_id


def new_node_id() -> str:
    """A fresh random node id, e.g. node-k3x9q2mf."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"  # no 0/o, 1/l: ids get read off labels
    return "node-" + "".join(secrets.choice(alphabet) for _ in range(8))


def new_dev_eui() -> str:
    """A random EUI-64 with the locally-administered bit set and the group bit clear."""
    b = bytearray(secrets.token_bytes(8))
    b[0] = (b[0] | 0x02) & 0xFE
    return b.hex().upper()


def check_mac(mac: str | None) -> str | None:
    """A hardware id as 12 lower-case hex digits (separators removed), or None."""
    if mac is None:
        return None
    digits = mac.replace(":", "").replace("-", "").lower()
    if len(digits) != 12 or any(c not in "0123456789abcdef" for c in digits):
        raise ProvisionError(f"MAC {mac!r} must be 6 bytes of hex, e.g. 24:6f:28:aa:bb:cc")
    return digits


def trusted_ota_keys(settings, db=None, node_id: str | None = None) -> dict[str, str]:
    """{key id: public key hex} that new nodes trust for signed updates: the platform's
    (DATA_DIR/ota/...) and, with db, those of the organisation owning node_id (or of db's, for a
    node not there yet), never another organisation's.

    The OTA feature owns the keys; until it writes that file, nodes are minted with no keys.
    """
    path = Path(settings.data_dir) / OTA_KEYS_FILE
    own = {}
    if db is not None:
        org = (orgs_store.org_of_node(db, node_id) if node_id else None) or org_of_scope(db)
        own = ota_store.org_keys(db, org)
    if not path.exists():
        return own
    keys = json.loads(path.read_text())
    if not isinstance(keys, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise ProvisionError(f"{path} must hold a JSON object {{key_id: public_key_hex}}")
    return {**keys, **own}


def _board_has_radio(board: str | None) -> bool:
    if board is None:
        return False
    try:
        return boards.load(board)["radio"] is not None
    except boards.BoardError as e:
        raise ProvisionError(str(e)) from None


def register(db, settings, node_id: str | None = None, board: str | None = None,
             name: str | None = None, mac: str | None = None, actor: str | None = None,
             join_eui: str | None = None, sync: bool = True) -> dict:
    """Register a node and mint its identity; return it with its secrets (shown only now).

    Keys of the result: node_id, board, mqtt {user, password}, lorawan {dev_eui, join_eui,
    app_key} or None, ota {keys}, mac.
    """
    node_id = check_new_node_id(node_id or new_node_id())
    mac = check_mac(mac)
    radio = _board_has_radio(board)
    password = brokerauth.mint_password()
    lorawan = None
    if radio:
        lorawan = {"dev_eui": new_dev_eui(),
                   "join_eui": (join_eui or settings_join_eui()).upper(),
                   "app_key": secrets.token_bytes(16).hex().upper()}
    ota_keys = trusted_ota_keys(settings, db, node_id)
    cred = {"mqtt_user": node_id, "mqtt_hash": brokerauth.hash_password(password),
            "ota_hash": brokerauth.hash_password(file_password(password)),
            "ota_keys": ota_keys, "mac": mac, **(lorawan or {})}
    try:
        identity_store.register_node(db, node_id, cred, name=name, board=board, actor=actor)
    except StoreError as e:
        raise ProvisionError(str(e)) from None
    if sync:  # bulk callers (the simulator) register many, then sync once
        brokerauth.sync(db, settings.broker_dir)
    return {"node_id": node_id, "board": board, "name": name, "mac": mac,
            "mqtt": {"user": node_id, "password": password},
            "lorawan": lorawan, "ota": {"keys": ota_keys}}


def settings_join_eui() -> str:
    eui = os.environ.get("LORAWAN_JOIN_EUI") or DEFAULT_JOIN_EUI
    if len(eui) != 16 or any(c not in "0123456789abcdefABCDEF" for c in eui):
        raise ProvisionError(f"LORAWAN_JOIN_EUI={eui!r} must be 16 hex digits")
    return eui


def revoke(db, settings, node_id: str, actor: str | None = None) -> None:
    """Revoke a node's credentials; the broker refuses it from the moment this returns."""
    try:
        identity_store.revoke_credentials(db, node_id, actor)
    except StoreError as e:
        raise ProvisionError(str(e)) from None
    brokerauth.sync(db, settings.broker_dir)


def rotate(db, settings, node_id: str, actor: str | None = None, sync: bool = True) -> str:
    """Give a node a new MQTT password; return it (shown once). The old one stops working."""
    password = brokerauth.mint_password()
    try:
        identity_store.set_mqtt_hash(db, node_id, brokerauth.hash_password(password), actor,
                                     brokerauth.hash_password(file_password(password)))
    except StoreError as e:
        raise ProvisionError(str(e)) from None
    if sync:
        brokerauth.sync(db, settings.broker_dir)
    return password


def node_ca(settings) -> bytes | None:
    """The CA (PEM) nodes trust when the fleet serves them over TLS (`fleet tls`), else None."""
    d = node_tls_from_env(settings.data_dir).tls_dir
    return (d / certs.CA_FILE).read_bytes() if certs.configured(d) else None


def node_tls_files(ca: bytes | None) -> dict[str, bytes]:
    """The extra files of a node's image: the CA it trusts, when the fleet serves TLS."""
    return {NODE_CA_FILE: ca} if ca else {}


def node_config(identity: dict, mqtt_host: str, mqtt_port: int, wifi_ssid: str = "",
                wifi_password: str = "", tls: bool = False) -> dict:
    """The node's config.json from its identity: what the image builder writes to flash.

    tls: the node speaks MQTT over TLS and fetches updates over HTTPS, trusting NODE_CA_FILE.
    """
    cfg = {
        "node": identity["node_id"],
        "wifi": {"ssid": wifi_ssid, "password": wifi_password},
        "mqtt": {"host": mqtt_host, "port": mqtt_port, "user": identity["mqtt"]["user"],
                 "password": identity["mqtt"]["password"]},
        # The login for update files: derived, so the MQTT password never goes to the web server.
        "ota": {"keys": dict(identity["ota"]["keys"]),
                "password": file_password(identity["mqtt"]["password"])},
    }
    if identity.get("lorawan"):
        cfg["lorawan"] = dict(identity["lorawan"])
    if tls:
        cfg["mqtt"]["tls"] = {"ca": NODE_CA_FILE}
        cfg["ota"]["ca"] = NODE_CA_FILE
    return cfg


def issue(db, settings, node_id: str | None, board: str, actor: str | None = None,
          mac: str | None = None) -> dict:
    """The identity to write onto a board: register the node, or re-issue a registered one.

    The fleet never keeps a node's MQTT password, so flashing a registered node gives it a new
    one (the old image stops working); its LoRaWAN keys and OTA keys stay as registered.
    """
    cred = identity_store.get_credentials(db, node_id) if node_id else None
    if cred is None or cred["revoked_at"] is not None:
        return register(db, settings, node_id, board=board, actor=actor, mac=mac)
    mac = check_mac(mac)
    if mac and cred["mac"] and mac != cred["mac"]:
        raise ProvisionError(f"node {node_id} was registered on the board with MAC {cred['mac']}, "
                             f"this board is {mac}; revoke the node first to move it")
    password = rotate(db, settings, node_id, actor=actor)
    # The new image trusts the fleet's update keys of today, not those of its first flashing.
    keys = trusted_ota_keys(settings, db, node_id)
    identity_store.set_ota_keys(db, node_id, keys)
    return {"node_id": node_id, "board": board, "name": None, "mac": cred["mac"],
            "mqtt": {"user": cred["mqtt_user"], "password": password},
            "lorawan": identity_store.lorawan_keys(db, node_id), "ota": {"keys": keys}}


_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_PLAIN_MQTT_PORT = 1883


def node_mqtt_port(settings, port: int) -> int:
    """The broker port for a node's image: with TLS set up, the plain default means the TLS one.

    The plain listener is on loopback only then, so a node told 1883 could never connect.
    """
    if port == _PLAIN_MQTT_PORT and node_ca(settings):
        return node_tls_from_env(settings.data_dir).mqtt_tls_port
    return port


def build_image(db, settings, node_id: str, mqtt_host: str, mqtt_port: int = 1883,
                wifi_ssid: str = "", wifi_password: str = "",
                actor: str | None = None) -> tuple[str, bytes]:
    """(file name, bytes) of a registered node's LittleFS image, for the UI and the API.

    The image carries a new MQTT password (the fleet keeps only hashes), so an image made
    before stops working. Everything that can fail runs first, with a stand-in password of the
    same length: a failed build leaves the node's password as it was.
    """
    cred = identity_store.get_credentials(db, node_id)
    if cred is None or cred["revoked_at"] is not None:
        raise ProvisionError(f"node {node_id!r} has no active credentials; register it first")
    board_name = node_store.get_node(db, node_id).get("board")
    if not board_name:
        raise ProvisionError(f"node {node_id!r} has no board; an image is built for one board")
    mqtt_host = (mqtt_host or "").strip()
    if not mqtt_host or mqtt_host in _LOOPBACK:
        raise ProvisionError("say where the node finds the broker: its address as the node "
                             "reaches it (e.g. 192.168.1.10), not 127.0.0.1, which is the node")
    if not 0 < mqtt_port < 65536:
        raise ProvisionError(f"broker port {mqtt_port} is outside 1..65535")
    mqtt_port = node_mqtt_port(settings, mqtt_port)
    try:
        board = boards.load(board_name)
        packages = image.fetch_packages(board, os.environ.get("MIP_INDEX") or miplib.INDEX,
                                        settings.data_dir / "mip-cache")
        app = image.compile_app()
        fs_size = boards.fs_partition(board)["size"]
        ca = node_ca(settings)
        identity = {"node_id": node_id, "mqtt": {"user": cred["mqtt_user"],
                                                 "password": brokerauth.mint_password()},
                    "lorawan": identity_store.lorawan_keys(db, node_id),
                    "ota": {"keys": trusted_ota_keys(settings, db, node_id)}}

        def packed() -> bytes:
            cfg = node_config(identity, mqtt_host, mqtt_port, wifi_ssid, wifi_password, bool(ca))
            files = image.node_files(board, cfg, packages, app)
            files.update(node_tls_files(ca))
            return image.pack(files, fs_size)

        packed()  # the dry run: fits, compiles, packages present
    except (boards.BoardError, image.ImageError, miplib.MipError) as e:
        raise ProvisionError(f"no image for {node_id}: {e}") from None
    identity["mqtt"]["password"] = rotate(db, settings, node_id, actor=actor)
    identity_store.set_ota_keys(db, node_id, identity["ota"]["keys"])
    data = packed()
    audit_store.audit(db, actor, "node.image", node_id,
                      f"{board_name}, broker {mqtt_host}:{mqtt_port}, WiFi {wifi_ssid or '(none)'}")
    return f"{node_id}.{board_name}.littlefs.bin", data


def logins(db, settings, node_ids: list[str], known: dict[str, str], board: str | None = None,
           actor: str | None = None) -> dict[str, str]:
    """An MQTT password for each node (for simulated nodes and scripts), registering new ones.

    A registered node keeps its password from `known` while the broker still accepts it, else it
    gets a new one. The broker's files are rewritten and reloaded once for all.
    """
    active = identity_store.active_mqtt_hashes(db)
    out = {}
    for node in node_ids:
        password = known.get(node)
        if node in active and password and brokerauth.verify_password(password, active[node]):
            out[node] = password
        elif node in active:
            out[node] = rotate(db, settings, node, actor, sync=False)
        else:
            identity = register(db, settings, node, board=board, actor=actor, sync=False)
            out[node] = identity["mqtt"]["password"]
    brokerauth.sync(db, settings.broker_dir)
    return out
