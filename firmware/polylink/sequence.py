"""Frame sequence numbers that survive reboots: blocks reserved in flash, never reused."""

from micropython import const

from polylink.store import replace

_BLOCK = const(256)  # one flash write per 256 frames, and one per boot
_WIRE_MASK = const(0xFFFF)  # the frame carries 16 bits; the fleet extends them (proto.extend_seq)


class Sequence:
    """Hands out seqs; the file holds 'limit boots': any number below limit may be used."""

    def __init__(self, path, block=_BLOCK, wake=False):
        self.path = path
        self.block = block
        self.boots = 0
        limit = 0
        try:
            with open(path) as f:
                parts = f.read().split()
            limit = int(parts[0])
            self.boots = int(parts[1])
        except (OSError, ValueError, IndexError):
            # First boot, or a file we cannot trust: numbering restarts; boots shows why.
            pass
        if not wake:
            self.boots += 1  # a wake from deep sleep (power.py) is not a boot
        self.next = limit
        self.limit = limit + block
        self._save()

    def _save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d %d\n" % (self.limit, self.boots))
        replace(tmp, self.path)

    def close(self):
        """Before a deep sleep: record the exact next seq, so the wake continues without a gap
        (one small write; a reset instead skips to the reserved limit)."""
        self.limit = self.next
        self._save()

    def take(self) -> int:
        """The next seq for a frame (16 bits, as the wire carries it)."""
        if self.next >= self.limit:
            self.limit = self.next + self.block
            self._save()
        n = self.next
        self.next = n + 1
        return n & _WIRE_MASK
