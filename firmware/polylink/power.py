"""The deep-sleep duty cycle (config power.sleep "deep"): wake, sample, send, take downlinks,
deep-sleep until the next sample is due. Loaded only by nodes that sleep (docs/firmware.md).

RAM does not survive a deep sleep; what must (seq, LoRaWAN counters and off times, when the last
STATUS went) is written to flash just before the sleep, in a few small files.
"""

import asyncio

from micropython import const

from polylink import proto, status
from polylink.store import replace

_MIN_SLEEP_MS = const(1000)  # shorter sleeps cost more in the reboot than they save
_POLL_S = 0.1  # the awake loop's period: the node is awake only as long as it must be
_CLOSE_TIMEOUT_S = 2
# wifi_first: how long a wake waits for WiFi before it sends over LoRaWAN, if the last wake had
# WiFi (association takes seconds; the LoRaWAN session is ready at once from flash)
_WIFI_GRACE_MS = const(10000)


class Cycle:
    """One wake of a sleeping node; run() ends in hal.deepsleep(), which does not return."""

    def __init__(self, node):
        self.node = node
        self.path = node.hal.path("power")
        # ms since the last STATUS (None: one is due now) and ms the last sleep lasted
        self.since_status = None
        self.slept_ms = 0
        self.wifi_last = True  # the last wake had an MQTT session
        if node.woke:
            try:
                with open(self.path) as f:
                    parts = f.read().split()
                self.since_status = int(parts[0])
                self.slept_ms = int(parts[1])
                self.wifi_last = parts[2] != "0"
            except (OSError, ValueError, IndexError):
                pass  # no record: send a STATUS, and count no time as slept (conservative)
        self.t0 = node.hal.ticks_ms()

    def _status_due(self, age_ms) -> bool:
        s = self.since_status
        return s is None or s + age_ms >= self.node.status_schedule.interval * 1000

    def lora_now(self) -> bool:
        """May the queue go over LoRaWAN yet? A wifi_first node gives WiFi a few seconds at each
        wake, unless the last wake found none."""
        node = self.node
        if node.cfg.link_policy != "wifi_first" or not self.wifi_last:
            return True
        return node.hal.ticks_diff(node.hal.ticks_ms(), self.t0) >= _WIFI_GRACE_MS

    def stay_awake(self) -> str:
        """Why the node must not sleep now ("" when it may)."""
        node = self.node
        t = node._after_boot_task
        if t is not None and not t.done():
            # An OTA trial confirms its health only while running (slots.py counts every wake
            # as a trial boot, and would revert a release that sleeps through its trial).
            return "ota trial"
        ota = node.ota
        if ota is not None and ota.task is not None and not ota.task.done():
            return "ota update"
        if node._reboot_at is not None:
            return "reboot"
        if node._blinking:
            return "identify"
        return ""

    def idle(self) -> bool:
        """The wake's work is done: sampled, every frame delivered, no LoRaWAN exchange open;
        or what is left waits only for a duty-cycle off time, which is better slept through
        (sleep() saves the off time, so the next wake still keeps it)."""
        node = self.node
        if not node.samples:
            return False
        lora = node.lora
        if lora is not None and lora.dc_wait and not node._wifi_ok():
            return True
        return not node.store.count and (lora is None or not lora._busy.locked())

    async def run(self):
        node = self.node
        hal = node.hal
        p = node.cfg.power
        awake_max = p["awake_max"] * 1000
        linger = p["linger"] * 1000
        boot = not node.woke
        idle_at = None
        while True:
            node._tick()
            now = hal.ticks_ms()
            age = hal.ticks_diff(now, self.t0)
            if self._status_due(age):
                if node.emit(proto.STATUS, status.body(node, boot)) is not None:
                    boot = False
                    self.since_status = -age  # + age at the sleep: the time since this one
            why = self.stay_awake()
            if why:
                idle_at = None
            elif self.idle():
                if idle_at is None:
                    idle_at = now
                # Over MQTT the broker hands over what it held (persistent session) right after
                # SUBSCRIBE: linger for it. LoRaWAN downlinks come only in the RX windows, over.
                if not node._wifi_ok() or hal.ticks_diff(now, idle_at) >= linger:
                    break
            else:
                idle_at = None
            if not why and age >= awake_max:
                break  # frames not yet out stay queued in flash for the next wake
            await asyncio.sleep(_POLL_S)
        await self.sleep()

    async def sleep(self):
        node = self.node
        hal = node.hal
        if node.link.client is not None:
            try:
                await asyncio.wait_for(node.link.close(), _CLOSE_TIMEOUT_S)
            except asyncio.TimeoutError:
                pass
        # No await from here on: no task may take a seq or an FCnt after it was saved.
        now = hal.ticks_ms()
        ms = hal.ticks_diff(node.schedule._due, now)
        if ms < _MIN_SLEEP_MS:
            ms = _MIN_SLEEP_MS
        node.seq.close()
        if node._lw_keep is not None:
            node._lora_load()  # parked while WiFi carried the queue: its RAM state is saved too
        if node.lora is not None:
            node.lora.dev.sleep_save(now, hal.ticks_diff)
        since = self.since_status
        if since is None:  # the STATUS could not be queued: it stays due
            since = node.status_schedule.interval * 1000
        else:
            since += hal.ticks_diff(now, self.t0) + ms
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d %d %d\n" % (since, ms, 1 if node.link.connects else 0))
        replace(tmp, self.path)
        hal.deepsleep(ms)
