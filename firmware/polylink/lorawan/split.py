"""Split a TELEMETRY frame that does not fit the LoRaWAN data rate's payload, by priority.

A frame is never truncated: its readings are spread over several frames, each with its own seq
and the original timestamp, the readings of the quantities ranked first in the first frame.
"""

from polylink import proto


def split(frame, limit, take_seq, priority=()):
    """Frames (bytes) of at most limit bytes carrying frame's readings; take_seq() gives seqs.

    priority: quantity ids ranked first, in that order; the rest keep their order after them.
    Raises proto.FrameError for a frame that is not TELEMETRY (only readings can be spread).
    """
    mtype, _seq, ts, body = proto.decode(frame)
    if mtype != proto.TELEMETRY:
        raise proto.FrameError("only TELEMETRY frames can be split, not %s"
                               % proto.type_name(mtype))
    ranked = []
    for q in priority:
        for r in body:
            if r[0] == q:
                ranked.append(r)
    for r in body:
        if r[0] not in priority:
            ranked.append(r)
    buf = bytearray(proto.MAX_FRAME)
    out = []
    chunk = []
    for r in ranked:
        chunk.append(r)
        if proto.encode(buf, mtype, 0, chunk, ts) > limit:
            chunk.pop()
            if not chunk:
                raise proto.FrameError("one reading does not fit %d bytes" % limit)
            out.append(chunk)
            chunk = [r]
    if chunk:
        out.append(chunk)
    frames = []
    for c in out:
        n = proto.encode(buf, mtype, take_seq(), c, ts)
        frames.append(bytes(buf[:n]))
    return frames
