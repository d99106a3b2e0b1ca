"""The validated settings of one node (Config), its error and its files: what config.py and
configschema.py both use, below both of them."""

CONFIG_FILE = "config.json"
BOARD_FILE = "board.json"


class ConfigError(ValueError):
    """config.json or board.json holds a value the node cannot run with."""


class Config:
    """The validated settings of one node; the class values are placeholders until validate()."""

    # Annotations are for the type checker; MicroPython never evaluates them.
    node: str = ""
    board: dict = {}
    wifi_ssid: str = ""
    wifi_password: str = ""
    mqtt_host: str = ""
    mqtt_port: int = 1883
    mqtt_user: str | None = None
    mqtt_password: str | None = None
    mqtt_tls: dict | None = None
    keepalive: int = 60
    interval: int = 60
    status_interval: int = 300
    queue_max: int = 1000
    sensors: list = []
    bme280_addr: int = 0x76
    ota: dict = {}  # the "ota" section, defaults filled in (configschema.DEFAULTS)
    ota_keys: dict = {}
    lorawan: dict | None = None
    link_policy: str = "wifi"  # wifi | lorawan | wifi_first (LoRaWAN while WiFi is down)
    claim: dict | None = None
    power: dict = {}  # the "power" section, defaults filled in (configschema.DEFAULTS)
