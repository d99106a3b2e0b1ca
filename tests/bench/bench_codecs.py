"""Payload codecs: decodes per second on one core, and provider ingest with a JS-codec device mix.

Run: .venv/bin/python tests/bench/bench_codecs.py [--print-only | --profile]
Prints a markdown section and (unless --print-only) puts it in docs/benchmarks.md under
"## Codecs: Polylink, Cayenne LPP and JavaScript".

Decode: the same reading (21.5 °C, 48 %RH, 3.71 V, 1013.3 hPa) as a Polylink frame
(proto.decode), as Cayenne LPP (our decoder + mapping), and as the vendor-style JS codec of the
tests (tests/fleet/profiles/codecs/vendor_weather.js, sandboxed in QuickJS-ng) with its unit
conversions. Ingest: TTS uplink JSON messages through ProviderIngest (parse, decode, dedupe,
store in SQLite in batches of 500), all Polylink, all JS-codec devices, and half and half, the
three mixes interleaved in each run. Both kinds of message carry the same four readings, so the
store does the same work for each and the ratio is the codec path's.

Times are this process's CPU time (time.process_time): the cost per core the issue asks for,
which other processes on a shared machine do not inflate the way they do wall-clock time (the
wall-clock ratios are printed beside them). Medians of RUNS runs, one process, one core.

--profile prints where a JS-codec message's CPU time goes (cProfile of one all-JS run, and the
JS call split into its parts) instead of the report.
"""

import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from polylink import proto

from fleet.profiles import lpp, service
from fleet.profiles.decoding import Decoder
from fleet.providers import registry
from fleet.providers.worker import ProviderIngest
from fleet.store import identity as identity_store
from fleet.store import profiles as profile_store
from fleet.store import telemetry as telemetry_store
from fleet.store.migrate import open_db

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Codecs: Polylink, Cayenne LPP and JavaScript"
CODECS = ROOT / "tests" / "fleet" / "profiles" / "codecs"
# The JS codec's payload (02D227953010B8) decodes to these four, pressure from 1013.3 hPa.
READING = [(0, 0, 21.5), (1, 0, 48), (2, 0, 3.71), (4, 0, 101330)]
JS_PAYLOAD = bytes.fromhex("02D227953010B8")
FIELDS = [{"field": "air.temperature_f", "quantity": "temperature", "unit": "°F"},
          {"field": "air.pressure_hpa", "quantity": "pressure", "unit": "hPa"},
          {"field": "humidity_pct", "quantity": "humidity", "unit": "%"},
          {"field": "battery_mv", "quantity": "battery_voltage", "unit": "mV"}]
RUNS = 7
NODES = 100


def polylink_frame(seq=1):
    buf = bytearray(proto.MAX_FRAME)
    return bytes(buf[: proto.encode(buf, proto.TELEMETRY, seq & 0xFFFF, READING)])


def rate(fn, n):
    """Median calls per CPU second of fn over RUNS runs of n calls."""
    out = []
    for _ in range(RUNS):
        t = time.process_time()
        for _ in range(n):
            fn()
        out.append(n / (time.process_time() - t))
    return statistics.median(out)


def decodes():
    frame = polylink_frame()
    lpp_payload = lpp.encode([(1, 103, 21.5), (2, 104, 48), (3, 2, 3.71), (4, 115, 1013.3)])
    lpp_dec = Decoder({"name": "lpp", "codec": "lpp", "fields": []})
    js_dec = Decoder({"name": "w", "codec": "js", "fields": FIELDS,
                      "source": (CODECS / "vendor_weather.js").read_text()})
    js_payload = JS_PAYLOAD
    return [("Polylink frame (proto.decode)", rate(lambda: proto.decode(frame), 20000)),
            ("Cayenne LPP (decode + mapping)", rate(lambda: lpp_dec.decode(lpp_payload, 2, 0.0),
                                                    20000)),
            ("JS codec in QuickJS-ng (decode + mapping)",
             rate(lambda: js_dec.decode(js_payload, 2, 0.0), 5000))]


def _tts(eui, fcnt, payload, fport):
    up = {"f_port": fport, "f_cnt": fcnt, "frm_payload": base64.b64encode(payload).decode(),
          "rx_metadata": [{"gateway_ids": {"gateway_id": "gw-1"}, "rssi": -80, "snr": 7}]}
    return (f"v3/city@ttn/devices/{eui.lower()}/up",
            json.dumps({"end_device_ids": {"device_id": eui.lower(), "dev_eui": eui},
                        "uplink_message": up}).encode())


def ingest_once(js_share: float, messages: int) -> tuple[float, float]:
    """(messages per CPU second, per wall second) through ProviderIngest into a fresh SQLite
    store, one run."""
    with tempfile.TemporaryDirectory() as d:
        db = open_db(Path(d) / "fleet.db")
        telemetry_store.tune_for_bulk_writes(db)
        registry.add(db, Path(d), {"name": "ttn", "kind": "tts", "host": "127.0.0.1",
                                   "port": 1, "application": "city"}, "pw")
        service.save(db, {"name": "acme", "codec": "js", "fields": FIELDS,
                          "source": (CODECS / "vendor_weather.js").read_text()})
        js_nodes = int(NODES * js_share)
        for i in range(NODES):
            eui = f"70B3D57E{i:08X}"
            identity_store.register_node(db, f"n{i}", {"mqtt_user": f"n{i}",
                                                       "mqtt_hash": "x", "dev_eui": eui})
            if i < js_nodes:
                profile_store.assign(db, f"n{i}", "acme")
        msgs = []
        for k in range(messages):
            i = k % NODES
            eui = f"70B3D57E{i:08X}"
            fcnt = k // NODES + 1
            if i < js_nodes:
                msgs.append(_tts(eui, fcnt, JS_PAYLOAD, 2))
            else:
                msgs.append(_tts(eui, fcnt, polylink_frame(fcnt), 1))
        w = ProviderIngest(db, "ttn", "tts")
        cpu, wall = time.process_time(), time.perf_counter()
        for k, (topic, payload) in enumerate(msgs):
            w.add_message(topic, payload, 1.7e9 + k)
            if k % 500 == 499:
                w.flush()
        w.flush()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert telemetry_store.count_frames(db) == messages, "a message was not stored"
        assert telemetry_store.count_readings(db) == 4 * messages, "a reading was not stored"
        db.conn.close()
    return messages / cpu, messages / wall


def ingest(shares=(0.0, 0.5, 1.0), messages=10000):
    """Per share: median msg/CPU-s, the median, lowest and highest of each run's CPU cost ratio
    against all-Polylink, and the median wall-clock ratio (the shares run interleaved, so other
    load on the machine hits them alike)."""
    rates: dict = {s: [] for s in shares}
    ratios: dict = {s: [] for s in shares}
    wall_ratios: dict = {s: [] for s in shares}
    for _ in range(RUNS):
        run = {s: ingest_once(s, messages) for s in shares}
        for s in shares:
            rates[s].append(run[s][0])
            ratios[s].append(run[shares[0]][0] / run[s][0])
            wall_ratios[s].append(run[shares[0]][1] / run[s][1])
    return [(s, statistics.median(rates[s]), statistics.median(ratios[s]), min(ratios[s]),
             max(ratios[s]), statistics.median(wall_ratios[s]), min(wall_ratios[s]),
             max(wall_ratios[s])) for s in shares]


def us_per_call(fn, n=20000) -> float:
    """Median CPU microseconds per call of fn over RUNS runs of n calls."""
    return 1e6 / rate(fn, n)


def js_split() -> list[tuple[str, float]]:
    """Where one JS-codec decode's CPU time goes, part by part (microseconds)."""
    dec = Decoder({"name": "w", "codec": "js", "fields": FIELDS,
                   "source": (CODECS / "vendor_weather.js").read_text()})
    js = dec.js
    hexed = JS_PAYLOAD.hex()
    out = js.decode_fn(hexed, 2, 0.0, "")
    data = json.loads(out)["data"]
    js.ctx.eval("globalThis.__benchNothing = function (a, b, c, d) { return ''; };")
    nothing = js.ctx.get("__benchNothing")
    frame = polylink_frame()
    return [
        ("a call into the codec's context that does nothing (crossing, time limit armed)",
         us_per_call(lambda: nothing(hexed, 2, 0.0, ""))),
        ("the call: bytes from hex, recvTime Date, decodeUplink, JSON.stringify",
         us_per_call(lambda: js.decode_fn(hexed, 2, 0.0, ""))),
        ("json.loads of its answer", us_per_call(lambda: json.loads(out))),
        ("JsCodec.decode (the call, json.loads and the checks of data/errors)",
         us_per_call(lambda: js.decode(JS_PAYLOAD, 2, 0.0))),
        ("mapping and unit conversion of the four fields", us_per_call(
            lambda: dec.readings(data))),
        ("Decoder.decode, all of the above", us_per_call(lambda: dec.decode(JS_PAYLOAD, 2, 0.0))),
        ("for comparison: proto.decode of the Polylink frame", us_per_call(
            lambda: proto.decode(frame))),
    ]


def profile() -> None:
    """Print a cProfile of one all-JS ingest run and the JS decode split."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    ingest_once(1.0, 10000)
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    for name, us in js_split():
        print(f"{us:7.2f} us  {name}")


def report() -> str:
    dec = decodes()
    base = dec[0][1]
    ing = [(f"{int(s * 100)} % JS-codec devices", *rest) for s, *rest in ingest()]
    split = js_split()
    lines = [HEADING, "", "`.venv/bin/python tests/bench/bench_codecs.py`: medians of"
             f" {RUNS} runs in one process on this machine (2 shared cores), in CPU time of the"
             " process (the cost per core; other processes on the machine do not inflate it as"
             " they do wall-clock time). The same four readings as a Polylink frame, as Cayenne"
             " LPP and through the vendor-style JS codec of the tests (°F, hPa, %, mV"
             " converted); ingest: TTS uplink JSON through ProviderIngest into SQLite,"
             f" {NODES} devices, the three mixes interleaved in each run.",
             "", "| decode, one core | per CPU second | Polylink takes x less |",
             "|---|---:|---:|"]
    lines += [f"| {name} | {r:,.0f} | {base / r:.1f} |" for name, r in dec]
    lines += ["", "| provider ingest (TTS JSON -> SQLite), one core | msg per CPU second |"
              " CPU cost per message vs Polylink | runs from .. to | wall-clock ratio (from"
              " .. to) |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r:,.0f} | {ratio:.2f}x | {lo:.2f}x .. {hi:.2f}x |"
              f" {wall:.2f}x ({wlo:.2f}x .. {whi:.2f}x) |"
              for name, r, ratio, lo, hi, wall, wlo, whi in ing]
    verdict = "met" if ing[-1][2] <= 2 else "not met"
    lines += ["", "Cost ratios are the median of each run's own ratio. Goal: a JS-codec device"
              " costs the ingest at most 2x a Polylink frame (the last row, CPU cost):"
              f" {verdict} in this run.", "",
              "Where one JS-codec decode's CPU time goes (`--profile` also prints a cProfile"
              " of an all-JS ingest run):", "", "| part | us per decode |", "|---|---:|"]
    lines += [f"| {name} | {us:.2f} |" for name, us in split]
    lines += ["", "What was tried on the JS path (2026-12-04, `--profile`): the QuickJS context"
              " and the compiled codec are built once per profile version and reused for every"
              " frame (ProfiledDevices in fleet/profiles/uplinks.py; only a codec that throws,"
              " loops or runs out of memory gets a fresh context), so a call's crossing is the"
              " first row. Handing the payload over as a latin-1 string (charCodeAt), as a JSON"
              " array (JSON.parse), or turning hex into bytes with charCodeAt arithmetic instead"
              " of parseInt were each measured no faster in QuickJS-ng (the arithmetic: 2.6 us"
              " against 1.9 us for 7 bytes, 14.4 against 9.1 for 51); the 100 ms time limit"
              " costs ~0.5 us a call and stays. What remains is the engine running the vendor's"
              " decodeUplink and the JSON bridge (JSON.stringify in the engine, json.loads here,"
              " ~3 us together), which a codec pasted unchanged needs. Beyond the decode, a"
              " JS-codec message also keeps its raw payload (the last 100 per device, for trying"
              " a changed codec) and is numbered by its FCnt. The spread of 1.45x .. 2.5x seen"
              " before came from timing wall-clock on 2 cores shared with other work: the CPU"
              " ratios of the same runs stay in a narrow band; the wall-clock column shows the"
              " spread the machine adds.", ""]
    return "\n".join(lines)


def update_doc(section):
    text = DOC.read_text(encoding="utf-8")
    start = text.find(HEADING)
    if start < 0:
        DOC.write_text(text.rstrip("\n") + "\n\n" + section, encoding="utf-8")
        return
    end = text.find("\n## ", start + len(HEADING))
    end = len(text) if end < 0 else end + 1
    DOC.write_text(text[:start] + section.rstrip("\n") + "\n\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if "--profile" in sys.argv[1:]:
        profile()
        sys.exit(0)
    section = report()
    print(section)
    if "--print-only" not in sys.argv[1:]:
        update_doc(section)
        print(f"updated {DOC.relative_to(ROOT)}")
