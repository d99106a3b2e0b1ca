"""Run N real firmware nodes in one asyncio loop against a real broker.

    python -m polylink_host.sim --nodes 20 [--interval 10] [--mqtt-url mqtt://host:1883]
                                [--prefix sim] [--duration S] [--report S]
                                [--runtime cpython|micropython] [--heapsize BYTES]

--runtime micropython runs each node as its own process on the real MicroPython Unix port
(unixsim.py); without the interpreter installed it says so and runs the nodes on CPython.

Each node keeps its own flash directory under DATA_DIR/sim/<node>; broker settings come from the
same environment as the fleet (MQTT_URL, MQTT_PORT) unless --mqtt-url is given.
"""

import argparse
import asyncio
import json
import logging
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from polylink import config
from polylink.node import Node
from polylink.ota import slots
from polylink.ota.credential import file_password
from polylink_host.hal import WDT_RESET, HostHAL, SimDeepSleep, SimReset
from polylink_host.supervise import supervise

from provisioning.sources import BOARDS

# The DevKitC has no battery; simulated nodes carry a LiPo on a 1:2 divider at GPIO35 so the fleet
# sees battery readings (a board file for such a board would say the same).
SIM_BATTERY = {"adc_pin": 35, "divider": 2.0}
_WDT_CHECK_S = 0.5

log = logging.getLogger("polylink_host.sim")


def sim_board(name: str = "ESP32_GENERIC") -> dict:
    """The board simulated nodes run with: the real board file plus a simulated battery."""
    board = json.loads((BOARDS / f"{name}.json").read_text())
    board["battery"] = dict(SIM_BATTERY)
    # Boards with a battery input (Heltec, T-Beam) list it already: a second one is a duplicate.
    board["sensors"] = [s for s in board["sensors"] if s != "battery"] + ["battery"]
    return board


def write_config(
    root: Path,
    node: str,
    host: str,
    port: int,
    user: str | None = None,
    password: str | None = None,
    interval: int = 60,
    status_interval: int = 300,
    queue_max: int = 1000,
    board: dict | None = None,
    keepalive: int = 60,
    ota: dict | None = None,
    power: dict | None = None,
    ca: bytes | None = None,
) -> None:
    """Write a simulated node's board.json and config.json, as provisioning would.

    ca: the CA certificate (PEM) of a fleet serving nodes over TLS: the node then speaks MQTT
    over TLS and fetches updates over HTTPS, trusting only it (as fleet/identity/provision.py).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / config.BOARD_FILE).write_text(json.dumps(board or sim_board()))
    cfg = {
        "node": node,
        "wifi": {"ssid": "sim", "password": "sim"},
        "mqtt": {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "keepalive": keepalive,
        },
        "interval": interval,
        "status_interval": status_interval,
        "queue_max": queue_max,
    }
    if ota is not None:
        cfg["ota"] = ota
    if password:  # as provisioning writes it: the login for update files, not the MQTT password
        cfg["ota"] = dict(cfg.get("ota") or {}, password=file_password(password))
    if ca is not None:
        (root / "ca.pem").write_bytes(ca)
        cfg["mqtt"]["tls"] = {"ca": "ca.pem"}
        cfg["ota"] = dict(cfg.get("ota") or {}, ca="ca.pem")
    if power is not None:
        cfg["power"] = power
    path = root / config.CONFIG_FILE
    if path.exists():
        # Keep what the fleet changed on the node (CONFIG downlinks persist intervals).
        old = json.loads(path.read_text())
        for key in ("interval", "status_interval"):
            if key in old:
                cfg[key] = old[key]
    path.write_text(json.dumps(cfg))


class SimNode:
    """One simulated node: its HAL and a supervisor that restarts the firmware after a reset."""

    def __init__(self, node: str, root: Path, crash_versions=()):
        self.id = node
        self.root = Path(root)
        # The host port cannot run a slot's .mpy files, so it runs this tree's code whatever the
        # slot; a release "crashes at start" here when its version is named in crash_versions.
        self.crash_versions = set(crash_versions)
        self.board = config.load_board(str(self.root))
        self.hal = HostHAL(node, self.root, self.board)
        self.node: Node | None = None
        self.resets = 0
        self.crashes = 0
        self._task: asyncio.Task | None = None
        self._wdt_fired = False

    async def run(self) -> None:
        """Boot the firmware, and boot it again after every reset, until cancelled."""
        while True:
            self.hal.bootloader()  # the chip's bootloader: may roll back an unconfirmed runtime
            slots.boot(str(self.root))  # what boot.py does: count trial boots, revert if due
            cfg = config.load(str(self.root), default_node=self.id, board=self.board)
            if cfg.claim is not None:
                # A generic image, as main.py does: claim an identity, then boot again as it.
                from polylink import claim

                self.id = await claim.run(self.hal, cfg, str(self.root))
                self.hal.node = self.id
                continue
            self.node = Node(self.hal, cfg)
            if self.node.fw in self.crash_versions:
                self._task = asyncio.create_task(self._crash())
            else:
                self._task = asyncio.create_task(self.node.run())
            self._wdt_fired = False
            slept = None
            try:
                await self._task
            except SimDeepSleep as e:
                slept = e.ms
            except SimReset:
                pass  # hal.reset() set the cause
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if not self._wdt_fired or (me is not None and me.cancelling()):
                    self._task.cancel()
                    self.hal.drop_connections()
                    raise
                self.hal.cause = WDT_RESET
            except Exception:
                # On the chip an uncaught error ends main.py; the unfed watchdog then resets it.
                log.exception("node %s crashed", self.id)
                self.crashes += 1
                self.hal.cause = WDT_RESET
            self.resets += 1
            self.hal.drop_connections()
            self.hal.wdt_timeout_ms = None
            self.hal.led(False)
            if slept is not None:
                await self._deep_sleep(slept)
            await asyncio.sleep(0.05)  # boot time

    async def _deep_sleep(self, ms: int) -> None:
        """Power the node down for ms as the chip's deep sleep does: everything in RAM is gone
        (the Node object is dropped and built anew from flash), GPIOs float, WiFi is off."""
        hal = self.hal
        self.node = None
        self._task = None
        hal.pins.clear()
        hal.wifi_disconnect()
        if hal.modem is not None and hasattr(hal.modem, "sleep"):
            hal.modem.sleep()
        hal.asleep = True
        try:
            await asyncio.sleep(ms / 1000)
        finally:
            hal.asleep = False

    async def _crash(self) -> None:
        await asyncio.sleep(0.3)
        raise RuntimeError(f"simulated crash of release {self.node and self.node.fw}")

    def watchdog_expired(self) -> bool:
        """True (once per boot) when the running firmware's watchdog went unfed past its timeout.

        Called from the watchdog thread: the verdict is taken while a blocking call may still hold
        the loop, so feeding afterwards cannot undo it, as with the chip's hardware timer.
        """
        task = self._task
        if task is None or task.done() or self._wdt_fired or not self.hal.wdt_expired():
            return False
        self._wdt_fired = True
        return True

    def _bite(self) -> None:
        if self._wdt_fired and self._task is not None and not self._task.done():
            self._task.cancel()

    def power_cut(self) -> None:
        """Stop the node abruptly: sockets die without DISCONNECT, so the broker sends the will."""
        if self._task is not None:
            self._task.cancel()
        self.hal.drop_connections()


async def watchdog(nodes: list[SimNode]) -> None:
    """The simulated hardware watchdog of all nodes, until cancelled.

    One thread for the whole fleet: a task could not run while a blocking call starves the loop,
    which is exactly when a hardware watchdog must bite.
    """
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def check() -> None:
        while not stop.wait(_WDT_CHECK_S):
            for n in nodes:
                if n.watchdog_expired():
                    # Logged from here because the loop may be starved; the reset runs when the
                    # loop gets control back (a loop blocked for good hangs the whole simulator).
                    log.warning("node %s: watchdog expired, resetting", n.id)
                    loop.call_soon_threadsafe(n._bite)

    thread = threading.Thread(target=check, name="sim-watchdog", daemon=True)
    thread.start()
    try:
        await asyncio.Event().wait()
    finally:
        stop.set()


def node_ids(prefix: str, count: int) -> list[str]:
    width = max(4, len(str(count - 1)))
    ids = [f"{prefix}-{i:0{width}d}" for i in range(count)]
    for i in ids[:1] + ids[-1:]:
        config.check_node_id(i)
    return ids


def summary(nodes: list[SimNode], started: float) -> str:
    live = [n.node for n in nodes if n.node is not None]
    up = sum(1 for n in live if n.link.up.is_set())
    sent = sum(n.sent for n in live)
    waiting = sum(n.store.count for n in live)
    dropped = sum(n.store.dropped for n in live)
    resets = sum(n.resets for n in nodes)
    return (
        f"sim: {len(nodes)} nodes, {up} connected, {sent} frames acknowledged, {waiting} waiting, "
        f"{dropped} dropped, {resets} resets, {time.monotonic() - started:.0f} s"
    )


def ask_fleet(args: list[str], env: dict, stdin: str = "") -> dict:
    """Run the fleet's command line (`fleet ARGS`, as a technician would) and read its JSON.

    The command is $FLEET, else the `fleet` installed beside this Python, else `fleet` on PATH.
    """
    here = Path(sys.executable).with_name("fleet")
    command = shlex.split(env.get("FLEET", "")) or [str(here) if here.exists() else "fleet"]
    try:
        r = subprocess.run(command + args, input=stdin, capture_output=True, text=True, env=env)
    except OSError as e:
        raise ValueError(f"cannot run the fleet's command line {command[0]}: {e}") from None
    if r.returncode:
        why = (r.stderr.strip().splitlines() or [f"fleet {args[0]} failed"])[-1]
        raise ValueError(why.removeprefix("Error: "))
    return json.loads(r.stdout)


def fleet_logins(ids: list[str], data_dir: Path, env: dict) -> dict[str, tuple[str, str]]:
    """Per-node MQTT logins for simulated nodes on the fleet's own broker (which enforces them).

    Each node is registered in the fleet like a real one (board ESP32_GENERIC); a node simulated
    before keeps the password in its flash config.json if the fleet still accepts it, else it
    gets a new one (`fleet node logins`).
    """
    known = {}
    for node in ids:
        path = data_dir / "sim" / node / config.CONFIG_FILE
        if path.exists():
            known[node] = json.loads(path.read_text()).get("mqtt", {}).get("password")
    # (No *ids in the list: every firmware file, this one too, compiles with mpy-cross.)
    answer = ask_fleet(["node", "logins"] + ids + ["--known-stdin", "--actor", "sim"], env,
                       json.dumps(known))
    return {node: (node, password) for node, password in answer["logins"].items()}


async def run(
    ids: list[str],
    data_dir: Path,
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    interval: int,
    status_interval: int,
    duration: float | None = None,
    report_s: float = 0,
    logins: dict[str, tuple[str, str]] | None = None,
) -> list[SimNode]:
    """Provision and run the nodes; stop after duration seconds (None: until cancelled).

    logins: per-node (user, password), else every node uses user and password.
    """
    nodes = []
    for node in ids:
        root = data_dir / "sim" / node
        u, pw = logins[node] if logins else (user, password)
        write_config(root, node, host, port, u, pw, interval, status_interval)
        nodes.append(SimNode(node, root))
    started = time.monotonic()
    # Spread the boots so a large fleet does not hit the broker with every CONNECT at once.
    spread = min(10.0, len(nodes) / 500)

    async def boot(n: SimNode) -> None:
        await asyncio.sleep(random.uniform(0, spread))
        await n.run()

    tasks = [asyncio.create_task(boot(n)) for n in nodes]
    tasks.append(asyncio.create_task(watchdog(nodes)))
    await supervise(tasks, lambda: summary(nodes, started), duration, report_s)
    return nodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m polylink_host.sim", description=__doc__.split("\n")[0]
    )
    p.add_argument("--nodes", type=int, default=1, help="how many nodes to simulate (default 1)")
    p.add_argument(
        "--interval", type=int, default=60, help="sampling interval in seconds (default 60)"
    )
    p.add_argument(
        "--status-interval", type=int, default=300, help="status interval in seconds (default 300)"
    )
    p.add_argument(
        "--mqtt-url", help="broker as mqtt://[user:pass@]host[:port] (default: MQTT_URL/MQTT_PORT)"
    )
    p.add_argument(
        "--prefix", default="sim", help="node ids are PREFIX-0000, PREFIX-0001, ... (default sim)"
    )
    p.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)"
    )
    p.add_argument("--report", type=float, default=0, help="print the summary line every N seconds")
    p.add_argument("--runtime", choices=("cpython", "micropython"), default="cpython",
                   help="cpython: all nodes in this process (default); micropython: one "
                        "MicroPython Unix-port process per node")
    p.add_argument("--heapsize", type=int, default=None,
                   help="heap of each MicroPython node in bytes "
                        "(default: unixsim.DEFAULT_HEAPSIZE)")
    args = p.parse_args(argv)
    try:
        if args.nodes < 1:
            raise ValueError("--nodes must be at least 1")
        env = dict(os.environ, **({"MQTT_URL": args.mqtt_url} if args.mqtt_url else {}))
        fleet = ask_fleet(["node", "logins"], env)  # the broker, as the fleet's settings say
        host, port, user, password = (fleet[k] for k in ("host", "port", "user", "password"))
        data_dir = Path(fleet["data_dir"])
        ids = node_ids(args.prefix, args.nodes)
        config.validate(
            {
                "node": ids[0],
                "mqtt": {"host": host, "port": port},
                "interval": args.interval,
                "status_interval": args.status_interval,
            },
            sim_board(),
        )
        logins = None
        if fleet["logins_required"]:
            # The broker `fleet run` started admits registered nodes only.
            logins = fleet_logins(ids, data_dir, env)
    except ValueError as e:
        print(f"sim: {e}", file=sys.stderr)
        return 2
    if args.runtime == "micropython":
        from polylink_host import unixsim

        try:
            binary = unixsim.find_micropython()
        except unixsim.NoMicroPython as e:
            print(f"sim: {e}; running the nodes on CPython instead", file=sys.stderr, flush=True)
        else:
            return _run_unix(args, ids, data_dir, host, port, user, password, logins, binary)
    print(
        f"sim: {args.nodes} nodes -> mqtt://{host}:{port}, "
        f"flash under {data_dir / 'sim'}; Ctrl-C stops",
        flush=True,
    )
    loop = asyncio.new_event_loop()
    main_task = loop.create_task(
        run(
            ids,
            data_dir,
            host,
            port,
            user,
            password,
            args.interval,
            args.status_interval,
            args.duration,
            args.report,
            logins,
        )
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main_task.cancel)
    try:
        loop.run_until_complete(main_task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
    return 0


def _run_unix(args, ids, data_dir, host, port, user, password, logins, binary) -> int:
    """--runtime micropython: provision as run() does, then one supervised process per node."""
    from polylink_host import unixsim

    heap = args.heapsize or unixsim.DEFAULT_HEAPSIZE
    lib = unixsim.firmware_lib(data_dir)
    nodes = []
    for node in ids:
        root = data_dir / "sim" / node
        u, pw = logins[node] if logins else (user, password)
        write_config(root, node, host, port, u, pw, args.interval, args.status_interval)
        nodes.append(unixsim.UnixNode(node, root, lib, binary, heap))
    print(
        f"sim: {len(ids)} MicroPython nodes ({binary}, heap {heap} bytes each) -> "
        f"mqtt://{host}:{port}, flash under {data_dir / 'sim'}; Ctrl-C stops",
        flush=True,
    )
    loop = asyncio.new_event_loop()
    task = loop.create_task(unixsim.run(nodes, args.duration, args.report))
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
