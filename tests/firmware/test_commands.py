"""commands.py: every downlink gets a RESULT; junk gets an EVENT; nothing crashes the node."""

from _check import eq
from polylink import commands, proto


class FakeNode:
    def __init__(self):
        self.out = []
        self.interval = 60
        self.status_interval = 300
        self.reboots = 0
        self.busy = False
        self.blinks = None
        self.bad_downlinks = 0

    def emit(self, mtype, body, ts=None):
        # Encode for real: a body the codec rejects would be a bug in commands.py.
        buf = bytearray(proto.MAX_FRAME)
        n = proto.encode(buf, mtype, len(self.out), body, ts)
        d = proto.decode(bytes(buf[:n]))
        self.out.append((d[0], d[3]))

    def set_interval(self, s):
        self.interval = s

    def set_status_interval(self, s):
        self.status_interval = s

    def request_reboot(self):
        self.reboots += 1

    def identify(self, n):
        if self.busy:
            return False
        self.blinks = n
        return True


def _down(mtype, body):
    buf = bytearray(64)
    n = proto.encode(buf, mtype, 7, body)
    return bytes(buf[:n])


def _run(mtype, body, node=None):
    node = node or FakeNode()
    commands.Commands(node).handle(_down(mtype, body))
    return node


def test_set_interval_ok_and_out_of_range():
    n = _run(proto.COMMAND, {"cid": 5, "cmd": commands.SET_INTERVAL, "arg": 30})
    eq(n.interval, 30)
    eq(n.out[0][0], proto.RESULT)
    eq((n.out[0][1]["cid"], n.out[0][1]["code"], n.out[0][1]["value"]), (5, commands.OK, 30))
    n = _run(proto.COMMAND, {"cid": 6, "cmd": commands.SET_INTERVAL, "arg": 0})
    eq((n.interval, n.out[0][1]["code"]), (60, commands.BAD_ARG))
    n = _run(proto.COMMAND, {"cid": 6, "cmd": commands.SET_INTERVAL})
    eq(n.out[0][1]["code"], commands.BAD_ARG, "missing argument")


def test_reboot_is_answered_first_then_requested():
    n = _run(proto.COMMAND, {"cid": 1, "cmd": commands.REBOOT})
    eq((n.reboots, n.out[0][1]["code"]), (1, commands.OK))


def test_identify_default_bad_and_busy():
    n = _run(proto.COMMAND, {"cid": 2, "cmd": commands.IDENTIFY})
    eq((n.blinks, n.out[0][1]["code"]), (commands.BLINKS_DEFAULT, commands.OK))
    n = _run(proto.COMMAND, {"cid": 2, "cmd": commands.IDENTIFY, "arg": 500})
    eq(n.out[0][1]["code"], commands.BAD_ARG)
    busy = FakeNode()
    busy.busy = True
    n = _run(proto.COMMAND, {"cid": 3, "cmd": commands.IDENTIFY, "arg": 2}, busy)
    eq(n.out[0][1]["code"], commands.BUSY)


def test_unknown_command():
    n = _run(proto.COMMAND, {"cid": 9, "cmd": 77})
    eq((n.out[0][1]["cid"], n.out[0][1]["code"], n.out[0][1]["value"]), (9, commands.UNKNOWN, 77))


def test_config_sets_both_intervals_or_rejects_all():
    n = _run(proto.CONFIG, {"cid": 4, "interval": 15, "status_interval": 120})
    eq((n.interval, n.status_interval, n.out[0][1]["code"]), (15, 120, commands.OK))
    n = _run(proto.CONFIG, {"cid": 4, "interval": 15, "status_interval": 1})
    eq((n.interval, n.status_interval, n.out[0][1]["code"]), (60, 300, commands.BAD_ARG))
    n = _run(proto.CONFIG, {"cid": 4})
    eq(n.out[0][1]["code"], commands.BAD_ARG)


def test_garbage_and_uplinks_become_events_with_a_count():
    node = FakeNode()
    c = commands.Commands(node)
    c.handle(b"\xff\x00")
    c.handle(b"")
    c.handle(_down(proto.TELEMETRY, [(0, 0, 20.0)]))
    eq([o[0] for o in node.out], [proto.EVENT] * 3)
    eq([o[1]["value"] for o in node.out], [1, 2, 3])
    eq([o[1]["code"] for o in node.out], [commands.EV_BAD_DOWNLINK] * 3)
    eq("not a downlink" in node.out[2][1]["text"], True)
    eq(node.bad_downlinks, 3)


def test_failing_action_is_answered_not_raised():
    node = FakeNode()

    def broken(s):
        raise OSError(28, "ENOSPC")

    node.set_interval = broken
    commands.Commands(node).handle(
        _down(proto.COMMAND, {"cid": 8, "cmd": commands.SET_INTERVAL, "arg": 10})
    )
    eq(node.out[0][1]["code"], commands.FAILED)
    eq("OSError" in node.out[0][1]["text"], True)
