"""The MQTT broker the fleet starts and owns: mosquitto with the project's config, else amqtt."""

import asyncio
import ctypes
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from string import Template

from fleet.datadir import private_dir

HOST = "127.0.0.1"
# The largest MQTT packet our broker accepts (the template says why this size).
MAX_PACKET_SIZE = 4096
TEMPLATE = Path(__file__).with_name("mosquitto.conf.tmpl")
_SYSTEM_MOSQUITTO = "/usr/sbin/mosquitto"
# An MQTT 3.1.1 CONNECT (clean session, keepalive 10 s, client id "polylink-probe") and the
# CONNACK that accepts it: a listening socket alone does not prove the broker is serving yet.
_PROBE_CONNECT = bytes.fromhex("101a00044d5154540402000a000e706f6c796c696e6b2d70726f6265")
_CONNACK = bytes.fromhex("2002")
_DISCONNECT = bytes.fromhex("e000")


class BrokerError(RuntimeError):
    """The broker could not be started, or stopped unexpectedly."""


class PortInUseError(BrokerError):
    """The port the broker (or the web server) should listen on is held by another process."""


def port_in_use_message(port: int) -> str:
    """The message a user sees when the MQTT port is taken, with both ways out."""
    other = 1884 if port != 1884 else 1885
    return (
        f"port {port} is already in use (a system mosquitto?). "
        f"Choose another with MQTT_PORT={other} make run, "
        f"or use that broker with MQTT_URL=mqtt://127.0.0.1:{port} make run"
    )


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if nothing listens on host:port (checked by binding it the way a server would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as servers set it: a socket in TIME_WAIT does not count as taken,
        # a listening one does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def find_mosquitto() -> str | None:
    """Path of the mosquitto executable, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    if os.access(_SYSTEM_MOSQUITTO, os.X_OK):
        return _SYSTEM_MOSQUITTO
    return None


def current_user() -> str:
    """The login name this process runs as (mosquitto must not switch away from it)."""
    return pwd.getpwuid(os.geteuid()).pw_name


# Every client logs in: nodes with the credentials minted at registration, the ingest worker and
# the fleet with their service accounts (fleet/broker/auth.py writes both files and sends SIGHUP
# when a credential changes). The client id is the username, so no client can take over another's
# session by choosing its client id.
_AUTH = """allow_anonymous false
password_file $broker_dir/passwd
acl_file $broker_dir/acl
use_username_as_clientid true"""
# Test brokers only (auth=False): any process on this machine may connect without a login.
_ANONYMOUS = "allow_anonymous true"
# Zero-touch claims (identity/claims.py): boards log in with a claim token and may only ask for
# their identity. Not bound to the client id: many boards claim with the same token at once.
_CLAIM_LISTENER = """
listener $claim_port 127.0.0.1
allow_anonymous false
password_file $broker_dir/claim_passwd
acl_file $broker_dir/claim_acl"""


# Nodes on the network: MQTT over TLS with the fleet's certificate (fleet/tls), the same logins
# and ACL as the loopback listener. TLS 1.2 is the floor: ESP32 MicroPython's mbedTLS speaks it,
# and everything older is broken. No client certificates: nodes log in with their password.
_TLS_LISTENER = """
listener $tls_port $tls_host
certfile $certfile
keyfile $keyfile
tls_version tlsv1.2
$auth"""


class TLSListener:
    """Where the broker serves MQTT over TLS, and with which certificate (fleet/tls/certs.py)."""

    def __init__(self, host: str, port: int, certfile: Path, keyfile: Path):
        self.host, self.port = host, port
        self.certfile, self.keyfile = Path(certfile), Path(keyfile)


def render_config(port: int, broker_dir: Path, auth: bool = False,
                  claim_port: int | None = None, tls: TLSListener | None = None) -> str:
    """The project's mosquitto.conf for a broker on 127.0.0.1:port with its data in broker_dir.

    auth=True (what `fleet run` uses) enforces the fleet's password and ACL files. tls adds the
    MQTT-over-TLS listener for nodes on the network; the plain listener stays on loopback.
    """
    paths = [broker_dir] + ([tls.certfile, tls.keyfile] if tls else [])
    for path in paths:
        # mosquitto's config format has no quoting: a space or newline would split the line.
        if any(c.isspace() for c in str(path)):
            raise BrokerError(f"{path} contains whitespace, which mosquitto "
                              "cannot read in its config; choose a DATA_DIR without spaces")
    auth_text = Template(_AUTH).substitute(broker_dir=broker_dir) if auth else _ANONYMOUS
    claim = (Template(_CLAIM_LISTENER).substitute(claim_port=claim_port, broker_dir=broker_dir)
             if claim_port else "")
    tls_text = ""
    if tls is not None:
        if not auth:
            raise BrokerError("the TLS listener faces the network: it needs the fleet's logins "
                              "(auth=True), never anonymous clients")
        tls_text = Template(_TLS_LISTENER).substitute(
            tls_port=tls.port, tls_host=tls.host, certfile=tls.certfile, keyfile=tls.keyfile,
            auth=auth_text)
    return Template(TEMPLATE.read_text()).substitute(
        auth=auth_text,
        claim_listener=claim,
        tls_listener=tls_text,
        port=port,
        max_packet_size=MAX_PACKET_SIZE,
        user=current_user(),
        persistence_dir=broker_dir,
        log_file=broker_dir / "mosquitto.log",
    )


def write_config(port: int, broker_dir: Path, auth: bool = False,
                 claim_port: int | None = None, tls: TLSListener | None = None) -> Path:
    """Write the project's config into broker_dir and return its path."""
    private_dir(broker_dir)
    path = broker_dir / "mosquitto.conf"
    path.write_text(render_config(port, broker_dir, auth, claim_port, tls))
    return path


def _die_with_parent(parent: int):
    def set_up() -> None:
        # Linux: the child gets SIGTERM when the thread that started it dies, so a killed server
        # or test run leaves no broker or worker behind holding its port.
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        if os.getppid() != parent:
            os._exit(1)  # the parent died before the line above: no signal would ever come

    return set_up


def spawn(command: list[str], log_path: Path,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a child process that logs to log_path and dies with this process."""
    private_dir(log_path.parent)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Its own session: a Ctrl-C at the terminal reaches only the server, which then stops
            # its children in order (ingest before broker).
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None,
        )


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a child (a clean shutdown: mosquitto saves its database), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def mqtt_ready(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if an MQTT broker on host:port accepts a connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_PROBE_CONNECT)
            reply = b""
            while len(reply) < 4:
                chunk = sock.recv(4 - len(reply))
                if not chunk:
                    return False
                reply += chunk
            sock.sendall(_DISCONNECT)
            # Any CONNACK means the broker serves; one that enforces logins refuses the probe.
            return reply[:2] == _CONNACK
    except OSError:
        return False


class Broker:
    """An MQTT broker on 127.0.0.1:port that this process started and owns."""

    kind = "broker"

    def __init__(self, port: int, broker_dir: Path):
        self.host = HOST
        self.port = port
        self.broker_dir = Path(broker_dir)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.broker_dir / f"{self.kind}.out"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 15.0) -> "Broker":
        """Start the broker and return once it accepts MQTT connections."""
        if self.running:
            return self
        if not port_is_free(self.port, self.host):
            raise PortInUseError(port_in_use_message(self.port))
        tls = getattr(self, "tls", None)
        if tls is not None and not port_is_free(tls.port, tls.host):
            raise PortInUseError(f"port {tls.port} (MQTT over TLS) is already in use on "
                                 f"{tls.host}; choose another with MQTT_TLS_PORT")
        self.proc = spawn(self.command(), self.log_path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self._log_tail()
                self.proc = None
                if "in use" in tail:
                    raise PortInUseError(port_in_use_message(self.port))
                raise BrokerError(f"{self.kind} exited while starting on port {self.port}:\n{tail}")
            if mqtt_ready(self.host, self.port):
                # Other processes (the CLI registering a node) signal the broker to reload.
                (self.broker_dir / "broker.pid").write_text(f"{self.proc.pid}\n")
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"{self.kind} did not accept connections on port {self.port} "
                          f"within {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker cleanly; its persistent sessions and queues stay on disk."""
        if self.proc is not None:
            stop_process(self.proc, timeout)
            self.proc = None
            (self.broker_dir / "broker.pid").unlink(missing_ok=True)

    def kill(self) -> None:
        """Kill the broker without a clean shutdown, as a crash or power loss would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> "Broker":
        """Stop and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def _log_tail(self, lines: int = 15) -> str:
        texts = []
        for path in (self.log_path, self.broker_dir / "mosquitto.log"):
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class MosquittoBroker(Broker):
    """mosquitto with the project's config (fleet/broker/mosquitto.conf.tmpl)."""

    kind = "mosquitto"

    def __init__(self, port: int, broker_dir: Path, executable: str | None = None,
                 config_text: str | None = None, auth: bool = False,
                 claim_port: int | None = None, tls: TLSListener | None = None):
        super().__init__(port, broker_dir)
        self.auth = auth
        self.claim_port = claim_port
        self.tls = tls
        self.executable = executable or find_mosquitto()
        if self.executable is None:
            raise BrokerError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        # Tests pass config_text to run a broker with other settings (mosquitto's defaults).
        self.config_text = config_text

    def command(self) -> list[str]:
        if self.config_text is None:
            conf = write_config(self.port, self.broker_dir, self.auth, self.claim_port, self.tls)
        else:
            self.broker_dir.mkdir(parents=True, exist_ok=True)
            conf = self.broker_dir / "mosquitto.conf"
            conf.write_text(self.config_text)
        return [self.executable, "-c", str(conf)]


class AmqttBroker(Broker):
    """amqtt, the embedded Python broker used when mosquitto is not installed.

    It keeps sessions in memory only: queued messages survive an ingest restart but not a
    broker restart. Install mosquitto for persistence.
    """

    kind = "amqtt"

    def __init__(self, port: int, broker_dir: Path, host: str = HOST):
        super().__init__(port, broker_dir)
        self.host = check_loopback(host)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "fleet.broker.server", "amqtt", str(self.port), self.host]


def make_broker(port: int, broker_dir: Path, auth: bool = False,
                claim_port: int | None = None, tls: TLSListener | None = None) -> Broker:
    """mosquitto when installed (enforcing the fleet's logins if auth), else embedded amqtt.

    With tls (serving nodes on the network) mosquitto is required: amqtt has no per-node logins.
    """
    if find_mosquitto():
        return MosquittoBroker(port, broker_dir, auth=auth, claim_port=claim_port, tls=tls)
    if tls is not None:
        raise BrokerError("serving nodes over TLS needs mosquitto (apt-get install mosquitto): "
                          "the embedded broker has no per-node logins")
    return AmqttBroker(port, broker_dir)


def check_loopback(host: str) -> str:
    """host if it is a loopback address; else BrokerError, since amqtt lets anyone in."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise BrokerError(
            f"refusing to start the embedded broker (amqtt) on {host}: it lets any client in "
            "without a login, so it listens on loopback (127.0.0.1) only. Install mosquitto "
            "(apt-get install mosquitto) to serve nodes on other machines with per-node logins")
    return host


def amqtt_config(port: int, host: str = HOST) -> dict:
    """amqtt's configuration: a loopback listener, anonymous clients (hence loopback only)."""
    host = check_loopback(host)
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {
            "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
        },
    }


def run_amqtt(port: int, host: str = HOST) -> None:
    """Serve amqtt on host:port (loopback only) until SIGTERM or SIGINT."""
    config = amqtt_config(port, host)
    # Here, not at the top: amqtt is slow to import and only this fallback broker needs it.
    from amqtt.broker import Broker as AmqttServer

    async def serve() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        server = AmqttServer(config)
        await server.start()
        await stopping.wait()
        await server.shutdown()

    asyncio.run(serve())


if __name__ == "__main__":
    if len(sys.argv) in (3, 4) and sys.argv[1] == "amqtt" and sys.argv[2].isdigit():
        try:
            run_amqtt(int(sys.argv[2]), *sys.argv[3:])
        except BrokerError as e:
            raise SystemExit(f"error: {e}") from None
    else:
        sys.exit("usage: python -m fleet.broker.server amqtt PORT")
