"""The node application: sampling, status, store-and-forward sending, downlinks and the watchdog."""

import asyncio

from polylink import config, proto, status
from polylink.net.link import Link, LinkDown
from polylink.sensors import Schedule, SensorSet
from polylink.sequence import Sequence
from polylink.store import Store

FW_VERSION = "0.1.0"
EV_SENSOR_FAILED = 2  # EVENT code: a sensor started failing (docs/firmware.md lists all codes)
WDT_TIMEOUT_MS = 30000
_TICK_S = 1  # the main loop's period: feeds the watchdog, keeps uptime, carries out reboots
_REBOOT_GRACE_MS = 10000  # how long a reboot waits for the queue (with its RESULT) to drain
_STALL_MARGIN_MS = 60000
# codes.DEEPSLEEP_RESET (machine.reset_cause() after a wake from deep sleep), kept here so the
# resident node does not load codes.py (tests/test_codes.py holds it to codes.py)
_DEEPSLEEP_RESET = 4


class Node:
    """One Polylink node; run() is the whole application."""

    FW_VERSION = FW_VERSION
    # A wifi_first node keeps only the code of the link in use (False: both, for the benchmark)
    active_link_only = True

    def __init__(self, hal, cfg):
        self.hal = hal
        self.cfg = cfg
        self.reset_cause = hal.reset_cause()
        self.woke = self.reset_cause == _DEEPSLEEP_RESET  # this run is one wake (power.py)
        # The version that runs: the slot pointer's (an OTA update) or the factory app's. The
        # slot code is needed again only for an update, so it is not kept in the heap.
        from polylink.ota import slots

        st = slots.read(hal.root)
        config.unload("ota")  # slots and the package it loaded
        self.fw = st["version"] or FW_VERSION
        self._ota_after_boot = bool(st["trial"] or st.get("rolled_back"))
        self.ota = None
        self._after_boot_task = None
        # power.sleep "deep": this run is one wake (power.py), read before the LoRaWAN link
        # because the time slept counts down its duty-cycle off times.
        self.sleeper = None
        if cfg.power and cfg.power.get("sleep") == "deep":
            from polylink.power import Cycle  # Device RAM: only a deep-sleeping node needs it

            self.sleeper = Cycle(self)
        self.samples = 0  # sample_once() calls since boot
        self.seq = Sequence(hal.path("seq"), wake=self.woke)
        self.store = Store(hal.path("queue"), cfg.queue_max)
        self.sensors = SensorSet(hal, cfg)
        self.schedule = Schedule(hal, cfg.interval)
        self.status_schedule = Schedule(hal, cfg.status_interval)
        self.link = Link(hal, cfg, self._on_message)
        self.lora = None  # the LoRaWAN link (lorawan.link.LoRaLink) while its code is loaded
        self.lora_sent = 0  # frames sent over LoRaWAN since boot
        self._modem = None  # the radio, when the policy and the board allow LoRaWAN
        self._lw_keep = None  # the LoRaWAN link's state while its code is unloaded (park())
        self.lora_parks = 0  # times the LoRaWAN code was dropped for WiFi since boot
        self._join_task = None
        if cfg.link_policy != "wifi":
            make = getattr(hal, "lora_modem", None)
            self._modem = make() if make is not None else None
            if self._modem is not None:
                self._lora_load()
                # wifi_first: only the link in use keeps its code in the heap (docs/lorawan.md)
                self.link.drop_idle = self.active_link_only and cfg.link_policy == "wifi_first"
        self.bad_downlinks = 0  # downlinks rejected since boot (EVENT code 1 reports the count)
        self.sent = 0  # frames acknowledged by the broker since boot
        self.encode_errors = 0
        self.store_errors = 0  # frames lost because the flash queue could not be written
        self._buf = bytearray(
            proto.MAX_FRAME
        )  # encoding; emit() never awaits, so one buffer serves all
        self._out = bytearray(proto.MAX_FRAME)  # the frame being sent, kept until its PUBACK
        self._readings = []
        self._errors = []
        self._failing = 0  # bit i set: sensor i failed at its last read
        self._queued = asyncio.Event()
        self._last = hal.ticks_ms()
        self._uptime_ms = 0
        self._last_sample = self._last
        self._reboot_at = None
        self._blinking = False
        self._died = None  # what ended a task run() started (_guard)

    # called by commands.py
    def set_interval(self, seconds):
        self.schedule.set_interval(seconds)
        config.save(self.hal.root, {"interval": seconds})

    def set_status_interval(self, seconds):
        self.status_schedule.set_interval(seconds)
        config.save(self.hal.root, {"status_interval": seconds})

    def request_reboot(self):
        self._reboot_at = self.hal.ticks_add(self.hal.ticks_ms(), _REBOOT_GRACE_MS)

    def identify(self, blinks) -> bool:
        if self._blinking:
            return False
        self._blinking = True
        asyncio.create_task(self._blink(blinks))
        return True

    async def _blink(self, blinks):
        try:
            for _ in range(blinks):
                self.hal.led(True)
                await asyncio.sleep(0.2)
                self.hal.led(False)
                await asyncio.sleep(0.2)
        finally:
            self._blinking = False

    def ota_agent(self):
        """The OTA agent, loaded on first need (an offer, a trial boot, periodic checks)."""
        if self.ota is None:
            from polylink.ota.agent import Agent  # Device RAM: most of the time nothing updates

            self.ota = Agent(self)
        return self.ota

    def _lora_load(self):
        # Device RAM: a WiFi-only node never loads the LoRaWAN code; wifi_first drops it on WiFi
        from polylink.lorawan.link import LoRaLink

        self.lora = LoRaLink(self.hal, self.cfg, self._modem, self._on_message,
                             keep=self._lw_keep,
                             slept_ms=self.sleeper.slept_ms if self.sleeper is not None else 0)
        self._lw_keep = None
        return self.lora

    def _lora_park(self):
        """Drop the LoRaWAN code from the heap while WiFi carries the queue (wifi_first); the
        session stays in lorawan.json and a small tuple, and comes back in _lora_load()."""
        lora = self.lora
        if lora is None or not lora.ready.is_set() or lora._busy.locked():
            return  # still joining or sending: not now
        t = self._join_task
        if t is not None:
            if not t.done():
                return
            self._join_task = None
        self._lw_keep = lora.park()
        self.lora = None
        self.lora_parks += 1
        config.unload("lorawan")

    def _start_join(self):
        # Not in run()'s task list nor its frame: once joined, nothing may hold the LoRaWAN code
        # that _lora_park() drops (a coroutine's frame can keep a stale reference).
        self._join_task = asyncio.create_task(self.lora.join())  # pyright: ignore

    def lora_ready(self) -> bool:
        """The node has a LoRaWAN session (joined or ABP), its code loaded or parked."""
        if self.lora is not None:
            return self.lora.ready.is_set()
        return self._lw_keep is not None

    def uptime_s(self) -> int:
        return self._uptime_ms // 1000

    def emit(self, mtype, body, ts=None):
        """Encode one uplink frame, queue it in flash; return its seq (None if not encodable)."""
        seq = self.seq.take()
        try:
            n = proto.encode(self._buf, mtype, seq, body, ts)
        except proto.FrameError:
            # A bug in what we tried to say, not in the link: count it and keep running.
            self.encode_errors += 1
            return None
        try:
            self.store.append(self._buf, n)
        except OSError:
            # Flash full or failing: losing this frame beats a dead sampler and a reset loop.
            self.store_errors += 1
            return None
        self._queued.set()
        return seq

    def _on_message(self, topic, msg, retained=False):
        # topic None: a LoRaWAN downlink on FPort 1 (lorawan/link.py)
        if topic is None or topic == self.link.down_topic:
            # commands.py is loaded per downlink and dropped again on MicroPython: most nodes
            # rarely get one, and its code is not worth 3 KB of heap in between.
            from polylink.commands import Commands

            Commands(self).handle(msg)
            config.unload("commands")

    async def sample_once(self):
        """Read every sensor, queue one TELEMETRY frame (and an EVENT per newly failing sensor)."""
        out = self._readings
        errors = self._errors
        out.clear()
        errors.clear()
        await self.sensors.read(out, errors)
        failing = 0
        for i, text in errors:
            failing |= 1 << i
            if not self._failing & (1 << i):
                self.emit(
                    proto.EVENT, {"code": EV_SENSOR_FAILED, "value": i, "text": text[:60]}
                )
        self._failing = failing
        if out:
            self.emit(proto.TELEMETRY, out, self.hal.time())
        self._last_sample = self.hal.ticks_ms()
        self.samples += 1

    def _wifi_ok(self) -> bool:
        return self.cfg.link_policy != "lorawan" and self.link.up.is_set()

    async def _link_ready(self):
        """Wait until a link the policy allows can carry a frame: WiFi first, else LoRaWAN."""
        if self._modem is None:
            await self.link.up.wait()
            return
        while not self._wifi_ok() and not (self.lora_ready() and (
                self.sleeper is None or self.sleeper.lora_now())):
            await asyncio.sleep(0.5)

    async def _sampler(self):
        while True:
            await self.schedule.wait()
            await self.sample_once()

    async def _reporter(self):
        boot = True  # until the first STATUS (the one naming the MicroPython) is queued
        while True:
            await self.status_schedule.wait()
            if self.emit(proto.STATUS, status.body(self, boot)) is not None:
                boot = False

    async def _sender(self):
        store = self.store
        link = self.link
        while True:
            # Peek only once connected: a frame dropped from a full queue meanwhile is not sent.
            await self._link_ready()
            n = store.peek(self._out)
            if not n:
                self._queued.clear()
                await self._queued.wait()
                continue
            idx = store.head_idx
            if not self._wifi_ok():
                # LoRaWAN code lives in lorawan/:  a WiFi-only node never loads it.
                await (self.lora or self._lora_load()).send_head(self, idx, n)
                continue
            if self.lora is not None and self.link.drop_idle:
                self._lora_park()
            try:
                await link.publish(link.up_topic, memoryview(self._out)[:n], key=idx)
            except LinkDown:
                await asyncio.sleep(0.2)  # publish() waits for the next session itself
                continue
            store.delivered(idx)
            self.sent += 1

    def _tick(self):
        now = self.hal.ticks_ms()
        self._uptime_ms += self.hal.ticks_diff(now, self._last)
        self._last = now
        limit = self.schedule.interval * 1000 + _STALL_MARGIN_MS
        if self.hal.ticks_diff(now, self._last_sample) < limit:
            # Feed only while sampling makes progress: a hung sensor read ends in a watchdog reset.
            self.hal.wdt_feed()
        if self._reboot_at is not None:
            if not self.store.count or self.hal.ticks_diff(now, self._reboot_at) >= 0:
                self.hal.reset()

    async def _guard(self, coro, vital=True):
        """Run one task's coroutine; keep what ended it for the main loop (_died).

        The rule (docs/firmware.md): every long-lived task runs, or the node resets. A task that
        died (a MemoryError in the link or the sender) ends run() and so resets the node, instead
        of the loop feeding the watchdog on a node that samples into flash and sends nothing.
        Kept here, not read from the task: MicroPython hands an unawaited task's exception to
        the loop's handler and forgets it.
        """
        try:
            await coro
        except Exception as e:  # noqa: BLE001 - reported and re-raised by the main loop
            self._died = e
            return
        if vital:
            self._died = RuntimeError("a long-lived task returned")

    async def run(self):
        """Start every task and run the main loop (watchdog, uptime, reboots) until reset."""
        self.hal.wdt_start(WDT_TIMEOUT_MS)
        # Device RAM: the crash note's code is loaded at boot and on a crash only
        from polylink import crash

        crash.report(self)
        config.unload("crash")
        spawn = asyncio.create_task
        tasks: list = [
            spawn(self._guard(self._sampler())),
            spawn(self._guard(self._sender())),
        ]
        if self.sleeper is None:
            tasks.append(spawn(self._guard(self._reporter())))  # a sleeper sends its own
        if self.cfg.link_policy != "lorawan" or self._modem is None:
            tasks.append(spawn(self._guard(self.link.run())))
        if self.lora is not None:
            self._start_join()
        if self._ota_after_boot:
            # The after-boot check ends by itself: only an error of it is fatal.
            self._after_boot_task = spawn(self._guard(self.ota_agent().after_boot(), False))
            tasks.append(self._after_boot_task)
        if self.cfg.ota and self.cfg.ota.get("check"):
            tasks.append(spawn(self._guard(self.ota_agent().check_loop(self.cfg.ota["check"]))))
        try:
            if self.sleeper is not None:
                await self.sleeper.run()  # ends in a deep sleep, from which the chip reboots
            while True:
                died = self._died
                if died is not None:
                    try:  # best effort: on a full heap even loading crash.py may fail
                        from polylink import crash

                        crash.note(self, died)
                    except Exception:  # noqa: BLE001 - the reset below goes on regardless
                        pass
                    raise died
                self._tick()
                await asyncio.sleep(_TICK_S)
        finally:
            if self._join_task is not None:
                tasks.append(self._join_task)
            for t in tasks:
                t.cancel()
            if self.ota is not None and self.ota.task is not None:
                self.ota.task.cancel()
