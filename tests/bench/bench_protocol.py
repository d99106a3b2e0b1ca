"""Frame size and LoRa airtime of the reference reading: Polylink vs Cayenne LPP and SenML.

Run: .venv/bin/python tests/bench/bench_protocol.py [--print-only]
Prints a markdown section and (unless --print-only) puts it in docs/benchmarks.md under
"## Protocol: frame size and airtime".
"""

import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cbor2
from polylink import proto

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Protocol: frame size and airtime"
TS = 1764288000  # 2025-11-28T00:00:00Z
READING = [(0, 0, 21.5), (1, 0, 48), (2, 0, 3.71)]
LORAWAN_OVERHEAD = 13  # MHDR 1 + FHDR 7 (no FOpts) + FPort 1 + MIC 4


def polylink(ts=None):
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[: proto.encode(buf, proto.TELEMETRY, 1, READING, ts)])


def cayenne_lpp(ts=None):
    """Cayenne LPP as its spec lays it out: channel, type, big-endian value per reading."""
    out = bytearray()
    out += bytes([1, 103]) + round(21.5 * 10).to_bytes(2, "big", signed=True)  # temperature 0.1
    out += bytes([2, 104, round(48 * 2)])  # relative humidity, 0.5 %
    out += bytes([3, 2]) + round(3.71 * 100).to_bytes(2, "big", signed=True)  # analog input 0.01
    if ts is not None:
        out += bytes([4, 133]) + ts.to_bytes(4, "big")  # unix time (extended LPP type 133)
    return bytes(out)


def senml_records(ts=None):
    head = {"bn": "urn:dev:polylink:node-1:"}
    if ts is not None:
        head["bt"] = ts
    return [
        {**head, "n": "temperature", "u": "Cel", "v": 21.5},
        {"n": "humidity", "u": "%RH", "v": 48},
        {"n": "battery_voltage", "u": "V", "v": 3.71},
    ]


def senml_json(ts=None):
    return json.dumps(senml_records(ts), separators=(",", ":")).encode()


CBOR_LABELS = {"bn": -2, "bt": -3, "n": 0, "u": 1, "v": 2}  # RFC 8428 section 6


def senml_cbor(ts=None):
    records = [{CBOR_LABELS[k]: v for k, v in r.items()} for r in senml_records(ts)]
    return cbor2.dumps(records, canonical=True)


def airtime_ms(payload, sf, bw=125_000, cr=1, preamble=8, explicit_header=True, crc=True):
    """LoRa time on air (Semtech AN1200.13) of a PHY payload of `payload` bytes."""
    ldro = 1 if sf >= 11 and bw == 125_000 else 0
    t_sym = (2**sf) / bw * 1000
    ih = 0 if explicit_header else 1
    num = 8 * payload - 4 * sf + 28 + 16 * crc - 20 * ih
    n_payload = 8 + max(math.ceil(num / (4 * (sf - 2 * ldro))) * (cr + 4), 0)
    return (preamble + 4.25) * t_sym + n_payload * t_sym


def median_us(fn, repeat=7, number=20000):
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(runs)


# Runs inside MicroPython (tests/mpy/run.mjs): heap bytes allocated and time per codec call.
MPY_SCRIPT = """
import gc, time
from polylink import proto
buf = bytearray(proto.MAX_FRAME)
R = [(0, 0, 21.5), (1, 0, 48), (2, 0, 3.71)]
S = {"fw": "0.1.0", "uptime": 3600, "rssi": -67, "queue": 0}
frame = bytes(buf[:proto.encode(buf, proto.TELEMETRY, 1, R, 1764288000)])
cases = (
    ("encode TELEMETRY + ts", lambda: proto.encode(buf, proto.TELEMETRY, 1, R, 1764288000)),
    ("encode STATUS", lambda: proto.encode(buf, proto.STATUS, 2, S)),
    ("decode TELEMETRY + ts", lambda: proto.decode(frame)),
)
for name, fn in cases:
    fn()
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(100):
        fn()
    alloc = (gc.mem_alloc() - a) // 100
    gc.enable()
    t0 = time.ticks_us()
    for _ in range(1000):
        fn()
    us = time.ticks_diff(time.ticks_us(), t0) / 1000
    print("%s|%d|%.1f" % (name, alloc, us))
"""


def micropython_figures():
    """Per-call heap allocation and time of the codec under MicroPython, or None without node."""
    node = shutil.which("node")
    if node is None or not (ROOT / "tests/mpy/node_modules").is_dir():
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(MPY_SCRIPT)
    try:
        out = subprocess.run([node, str(ROOT / "tests/mpy/run.mjs"), "script", f.name],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    finally:
        Path(f.name).unlink()
    return [line.split("|") for line in out.splitlines() if line.count("|") == 2]


def report():
    rows = [
        ("Polylink v1 (version, type, seq)", polylink()),
        ("Polylink v1 + timestamp", polylink(TS)),
        ("Cayenne LPP (no version, no seq)", cayenne_lpp()),
        ("Cayenne LPP + unix time", cayenne_lpp(TS)),
        ("SenML-CBOR (RFC 8428, bn + n/u/v)", senml_cbor()),
        ("SenML-CBOR + bt", senml_cbor(TS)),
        ("SenML-JSON (bn + n/u/v)", senml_json()),
        ("SenML-JSON + bt", senml_json(TS)),
    ]
    lines = [
        HEADING,
        "",
        "Reference reading: temperature 21.5 Cel, humidity 48 %RH, battery 3.71 V (timestamp "
        f"{TS}). Airtime: EU868, 125 kHz, CR 4/5, 8-symbol preamble, explicit header, CRC on, "
        f"low data rate optimisation at SF11/12, plus {LORAWAN_OVERHEAD} bytes of LoRaWAN "
        "overhead (MHDR, FHDR without FOpts, FPort, MIC). Reproduce: "
        "`.venv/bin/python tests/bench/bench_protocol.py` (part of `make bench`).",
        "",
        "| encoding | bytes | airtime SF7 (ms) | airtime SF12 (ms) | fits DR0 (51 B) |",
        "|---|---:|---:|---:|---|",
    ]
    for name, data in rows:
        phy = len(data) + LORAWAN_OVERHEAD
        lines.append(
            f"| {name} | {len(data)} | {airtime_ms(phy, 7):.1f} | {airtime_ms(phy, 12):.1f} | "
            f"{'yes' if len(data) <= 51 else 'no'} |"
        )
    frame = polylink(TS)
    buf = bytearray(proto.MAX_FRAME)
    enc = median_us(lambda: proto.encode(buf, proto.TELEMETRY, 1, READING, TS))
    dec = median_us(lambda: proto.decode(frame))
    lines += [
        "",
        f"Polylink frames: `{polylink().hex()}` and `{frame.hex()}` (docs/protocol.md explains "
        "every byte).",
        "",
        f"CPython {sys.version.split()[0]} on this machine, median of 7 runs of 20,000: encode "
        f"{enc:.1f} µs, decode {dec:.1f} µs per reference frame (with timestamp).",
        "",
    ]
    mpy = micropython_figures()
    if mpy is None:
        lines += ["(MicroPython figures skipped: run `npm ci --prefix tests/mpy` first.)", ""]
    else:
        lines += [
            "Under MicroPython 1.27, WebAssembly port in Node.js: times are not an ESP32's; heap "
            "bytes should be close to the device's (both 32-bit ports, where floats and ints "
            "above 2^30, such as Unix times, are heap objects):",
            "",
            "| call | heap bytes per call | µs per call (wasm) |",
            "|---|---:|---:|",
        ]
        lines += [f"| {name} | {alloc} | {us} |" for name, alloc, us in mpy]
        lines.append("")
    return "\n".join(lines)


def update_doc(section):
    text = DOC.read_text(encoding="utf-8")
    start = text.index(HEADING)
    end = text.find("\n## ", start + len(HEADING))
    end = len(text) if end < 0 else end + 1
    DOC.write_text(text[:start] + section.rstrip("\n") + "\n\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    section = report()
    print(section)
    if "--print-only" not in sys.argv[1:]:
        update_doc(section)
        print(f"updated {DOC.relative_to(ROOT)}")
