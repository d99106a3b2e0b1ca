"""Downlinks: COMMAND and CONFIG in, one RESULT out for each; bad input never crashes."""

from polylink import proto

# RESULT codes (docs/architecture.md, Seam 1)
OK = 0
UNKNOWN = 1
BAD_ARG = 2
FAILED = 3
BUSY = 4

# COMMAND cmd numbers: codes.REBOOT, SET_INTERVAL and IDENTIFY, kept here because this module is
# loaded for every downlink and codes.py would cost the heap its names (tests/test_codes.py).
REBOOT = 1
SET_INTERVAL = 2
IDENTIFY = 3

# EVENT code for a downlink that is not a valid COMMAND or CONFIG (docs/firmware.md lists all codes)
EV_BAD_DOWNLINK = 1

INTERVAL_MIN = 1
INTERVAL_MAX = 86400
STATUS_INTERVAL_MIN = 10
BLINKS_DEFAULT = 5
BLINKS_MAX = 60


def _ranged(v, lo, hi):
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


class Commands:
    """Turns downlink payloads into calls on the node (intervals, reboot, identify)."""

    def __init__(self, node):
        # The count of rejected downlinks lives on the node: this object lasts one downlink.
        self.node = node

    def handle(self, payload):
        """Decode one downlink and act; answer COMMAND/CONFIG with RESULT, junk with EVENT."""
        try:
            mtype, _seq, _ts, body = proto.decode(payload)
        except proto.FrameError as e:
            self._bad("bad downlink: %s" % e)
            return
        if mtype == proto.COMMAND:
            cid = body["cid"]
            code, value, text = self._safely(self._command, body)
        elif mtype == proto.CONFIG:
            cid = body["cid"]
            code, value, text = self._safely(self._config, body)
        elif mtype == proto.OTA_DOWN:
            self.node.ota_agent().offer(body)  # the agent reports its states with OTA_UP
            return
        else:
            self._bad("%s is not a downlink" % proto.type_name(mtype))
            return
        self.node.emit(proto.RESULT, {"cid": cid, "code": code, "value": value, "text": text})

    def _bad(self, text):
        node = self.node
        node.bad_downlinks += 1
        body = {"code": EV_BAD_DOWNLINK, "value": node.bad_downlinks, "text": text[:60]}
        node.emit(proto.EVENT, body)

    def _safely(self, fn, body):
        try:
            return fn(body)
        except Exception as e:
            # A failing action (flash full, driver error) is answered; it never kills the node.
            return FAILED, 0, ("%s: %s" % (type(e).__name__, e))[:60]

    def _command(self, body):
        cmd = body["cmd"]
        arg = body.get("arg")
        node = self.node
        if cmd == REBOOT:
            node.request_reboot()
            return OK, 0, "rebooting"
        if cmd == SET_INTERVAL:
            if not _ranged(arg, INTERVAL_MIN, INTERVAL_MAX):
                return BAD_ARG, 0, "interval must be %d..%d s" % (INTERVAL_MIN, INTERVAL_MAX)
            node.set_interval(arg)
            return OK, arg, "interval %d s" % arg
        if cmd == IDENTIFY:
            n = BLINKS_DEFAULT if arg is None or arg == 0 else arg
            if not _ranged(n, 1, BLINKS_MAX):
                return BAD_ARG, 0, "blinks must be 1..%d" % BLINKS_MAX
            if not node.identify(n):
                return BUSY, 0, "already blinking"
            return OK, n, "blinking"
        return UNKNOWN, cmd, "unknown command %d" % cmd

    def _config(self, body):
        interval = body.get("interval")
        status_interval = body.get("status_interval")
        if interval is None and status_interval is None:
            return BAD_ARG, 0, "CONFIG sets nothing"
        if interval is not None and not _ranged(interval, INTERVAL_MIN, INTERVAL_MAX):
            return BAD_ARG, 0, "interval must be %d..%d s" % (INTERVAL_MIN, INTERVAL_MAX)
        if status_interval is not None and not _ranged(
            status_interval, STATUS_INTERVAL_MIN, INTERVAL_MAX
        ):
            return (
                BAD_ARG,
                0,
                "status_interval must be %d..%d s" % (STATUS_INTERVAL_MIN, INTERVAL_MAX),
            )
        if interval is not None:
            self.node.set_interval(interval)
        if status_interval is not None:
            self.node.set_status_interval(status_interval)
        return OK, 0, "config applied"
