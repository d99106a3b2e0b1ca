"""Store-and-forward: a bounded FIFO of frames in flash segment files that survives reboot.

Each segment file holds records [flag 1][length 2, big-endian][frame]; flag 0xFF is waiting, 0x00
is done (acknowledged or dropped). Only the oldest record is ever marked done, so the waiting
records are always one contiguous run; a segment whose records are all done is deleted.
"""

import os

from micropython import const

_HDR = const(3)
_WAITING = const(0xFF)
_SEG_RECORDS = const(64)


class StoreError(OSError):
    """A frame cannot be queued (too long for a record)."""


class Store:
    """Bounded queue of frames in directory path; when full the oldest is dropped, counted."""

    def __init__(self, path, max_records, seg_records=_SEG_RECORDS):
        self.dir = path
        self.max = max_records
        self.seg_records = seg_records
        self.count = 0  # frames waiting
        self.dropped = 0  # frames dropped since boot because the queue was full
        self.head_idx = 0  # running number of the oldest waiting frame (pop() checks it)
        self._segs = []  # segment numbers holding waiting frames, oldest first
        self._head_off = 0  # offset of the oldest waiting record in _segs[0]
        self._head_len = 0
        self._tail_n = 0  # records written to the newest segment
        self._hdr = bytearray(_HDR)
        try:
            os.mkdir(path)
        except OSError:
            pass  # already there (EEXIST); anything worse shows up on the first open()
        self._scan()

    def _seg_path(self, n):
        return "%s/%d" % (self.dir, n)

    def _scan(self):
        """Rebuild the in-RAM index from the segment files, reading record headers only."""
        segs = []
        for name in os.listdir(self.dir):
            if name.isdigit():
                segs.append(int(name))
        segs.sort()
        hdr = self._hdr
        keep = []
        self.count = 0
        sealed = False
        for seg in segs:
            path = self._seg_path(seg)
            size = os.stat(path)[6]
            pos = 0
            first = -1
            n = 0
            sealed = False
            with open(path, "rb") as f:
                while pos + _HDR <= size:
                    f.seek(pos)
                    f.readinto(hdr)
                    ln = (hdr[1] << 8) | hdr[2]
                    if pos + _HDR + ln > size:
                        break  # a record cut short by power loss: the rest of this file is garbage
                    if hdr[0] == _WAITING:
                        if first < 0:
                            first = pos
                        self.count += 1
                    n += 1
                    pos += _HDR + ln
                # Never append after garbage: a cut record would swallow the next one.
                sealed = pos != size
            if first < 0:
                os.remove(path)
                continue
            if not keep:
                self._head_off = first
            keep.append(seg)
            self._tail_n = self.seg_records if sealed else n
        self._segs = keep
        if not keep:
            self._head_off = 0
            self._tail_n = 0
        self._settle()

    def _settle(self):
        """Point the head at the oldest waiting record, deleting segments that hold none."""
        hdr = self._hdr
        while self._segs:
            path = self._seg_path(self._segs[0])
            try:
                size = os.stat(path)[6]
                f = open(path, "rb")
            except OSError:
                size = 0
                f = None
            if f is not None:
                with f:
                    while self._head_off + _HDR <= size:
                        f.seek(self._head_off)
                        f.readinto(hdr)
                        ln = (hdr[1] << 8) | hdr[2]
                        if self._head_off + _HDR + ln > size:
                            break
                        if hdr[0] == _WAITING:
                            self._head_len = ln
                            return
                        self._head_off += _HDR + ln
            if f is not None:
                os.remove(path)
            self._segs.pop(0)
            self._head_off = 0
            if not self._segs:
                self._tail_n = 0
        self.count = 0

    def append(self, buf, n):
        """Queue the first n bytes of buf as one frame; drops (and counts) the oldest when full."""
        if n > 0xFFFF or n <= 0:
            raise StoreError("frame of %d bytes cannot be queued" % n)
        if self.count >= self.max:
            self._done()
            self.dropped += 1
        if not self._segs or self._tail_n >= self.seg_records:
            self._segs.append(self._segs[-1] + 1 if self._segs else 0)
            self._tail_n = 0
        hdr = self._hdr
        hdr[0] = _WAITING
        hdr[1] = n >> 8
        hdr[2] = n & 0xFF
        with open(self._seg_path(self._segs[-1]), "ab") as f:
            f.write(hdr)
            f.write(memoryview(buf)[:n])
        self._tail_n += 1
        self.count += 1
        if self.count == 1:
            self._head_len = n

    def peek(self, buf) -> int:
        """Copy the oldest waiting frame into buf; return its length (0: queue empty)."""
        while self.count:
            ln = self._head_len
            if ln > len(buf):
                # Not a frame we wrote (ours fit the buffer): drop it rather than stall.
                self._done()
                self.dropped += 1
                continue
            with open(self._seg_path(self._segs[0]), "rb") as f:
                f.seek(self._head_off + _HDR)
                f.readinto(memoryview(buf)[:ln])
            return ln
        return 0

    def pop(self, idx) -> bool:
        """Mark frame idx (head_idx when it was peeked) done; False if it was dropped meanwhile."""
        if idx != self.head_idx or not self.count:
            return False
        self._done()
        return True

    def delivered(self, idx):
        """Frame idx (head_idx when it was peeked) reached the network: pop it. If a frame
        appended while it was in flight dropped it from the full queue, it was counted dropped
        but is not lost, so the count takes it back."""
        if not self.pop(idx):
            self.dropped -= 1

    def _done(self):
        with open(self._seg_path(self._segs[0]), "r+b") as f:
            f.seek(self._head_off)
            f.write(b"\x00")
        self._head_off += _HDR + self._head_len
        self.head_idx += 1
        self.count -= 1
        if self.count:
            self._settle()
        else:
            # Queue empty: delete every segment, so the next frame starts a fresh file.
            for seg in self._segs:
                try:
                    os.remove(self._seg_path(seg))
                except OSError:
                    pass
            self._segs = []
            self._head_off = 0
            self._tail_n = 0


def replace(src, dst) -> None:
    """Rename src over dst (littlefs and POSIX replace atomically; FAT needs dst removed first)."""
    try:
        os.rename(src, dst)
    except OSError:
        os.remove(dst)
        os.rename(src, dst)
