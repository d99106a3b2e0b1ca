"""LoRaWAN budgets of the reference reading: uplinks per day within TTN fair use and duty cycle.

Airtime from polylink.lorawan.region.airtime_us (Semtech formula, the one the firmware enforces),
for the PHY payload = FRMPayload + 13 bytes (MHDR, FHDR without FOpts, FPort, MIC). Budgets:
The Things Network's fair use (30 s of uplink airtime per node per day) and the EU868 1 %
duty cycle of the g1 sub-band the default channels share (864 s per day).

Run: .venv/bin/python tests/bench/bench_lorawan.py [--print-only]
Prints a markdown section and (unless --print-only) puts it in docs/benchmarks.md under
"## LoRaWAN: airtime and uplinks per day".
"""

import sys
import tempfile
from pathlib import Path

from bench_firmware_mem import RUNNER, kb, mpy_tree, run_probe
from bench_protocol import TS, cayenne_lpp, polylink
from polylink.lorawan import region as eu

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## LoRaWAN: airtime and uplinks per day"
OVERHEAD = 13
FAIR_USE_US = 30 * 1000000
DUTY_US = 86400 * 1000000 // 100
DRS = ((5, "SF7"), (3, "SF9"), (0, "SF12"))


def report() -> str:
    frames = [("Polylink", polylink()), ("Polylink + timestamp", polylink(TS)),
              ("Cayenne LPP", cayenne_lpp()), ("Cayenne LPP + unix time", cayenne_lpp(TS))]
    lines = [HEADING, "",
             "Reference reading (temperature, humidity, battery); EU868 125 kHz, CR 4/5, CRC on,"
             " 13 bytes of LoRaWAN overhead. Uplinks/day = budget / airtime, rounded down.",
             "Reproduce: `.venv/bin/python tests/bench/bench_lorawan.py` (part of `make bench`).",
             "",
             "| frame | bytes | " + " | ".join(f"{n} airtime" for _, n in DRS) + " | "
             + " | ".join(f"{n} uplinks/day (TTN 30 s)" for _, n in DRS) + " | "
             + "SF12 uplinks/day (1 % duty cycle) |",
             "|---|---:|" + "---:|" * (2 * len(DRS) + 1)]
    for name, data in frames:
        times = [eu.airtime_us(len(data) + OVERHEAD, dr) for dr, _ in DRS]
        per_day = [FAIR_USE_US // t for t in times]
        duty = DUTY_US // times[-1]
        lines.append(f"| {name} | {len(data)} | "
                     + " | ".join(f"{t / 1000:.1f} ms" for t in times) + " | "
                     + " | ".join(str(n) for n in per_day) + f" | {duty} |")
    lines.append("")
    lines += heap()
    lines += dual()
    return "\n".join(lines)


def heap() -> list[str]:
    """Heap of the LoRaWAN modules under the wasm MicroPython (tests/bench/lorawan_mem_probe.py)."""
    probe = Path(__file__).with_name("lorawan_mem_probe.py")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, runner in ((".py source", RUNNER), (".mpy (mpy-cross)", mpy_tree(Path(d)))):
            rows.append((name, run_probe(runner, probe)))
    out = ["Heap the LoRaWAN modules add once imported (a node with `link_policy` wifi never",
           "imports them), gc.mem_alloc() after gc.collect(), wasm MicroPython; the wasm build's",
           "`cryptolib` stand-in is imported before the baseline (the ESP32 has it built in):",
           "",
           "| app loaded from | package + crypto + region | device | link | split | total |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, f in rows:
        out.append(f"| {name} | {kb(f['crypto_region'])} | {kb(f['lorawan'])} | "
                   f"{kb(f['lw_link'])} | {kb(f['lw_split'])} | {kb(f['total'])} |")
    out.append("")
    return out


def dual() -> list[str]:
    """Resident heap of a WiFi + LoRaWAN node on each link, both links' code kept vs only the
    active one's (tests/bench/dual_mem_probe.py, .mpy), measured one after the other here."""
    probe = Path(__file__).with_name("dual_mem_probe.py")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        runner = mpy_tree(Path(d))
        for name, mode in (("both links' code kept (before)", "both"),
                           ("only the active link's code (now)", "active")):
            rows.append((name, run_probe(runner, probe, mode)))
        u = run_probe(runner, probe.with_name("unload_mem_probe.py"))
    out = ["Resident heap of a WiFi + LoRaWAN node (`link_policy` wifi_first, Heltec WiFi LoRa 32",
           "V2 board, battery sensor, ABP session), app as .mpy, running: 5 s on WiFi against an",
           "in-memory broker, then 25 s on LoRaWAN over a fake radio after WiFi went away;",
           "gc.mem_alloc() after collections once control went back to the JS event loop (the",
           "wasm port frees nothing before). Both rows come from the same run of this script",
           "(`tests/bench/dual_mem_probe.py both|active`):",
           "",
           "| WiFi + LoRaWAN node | on WiFi | on LoRaWAN | frames sent (WiFi / LoRaWAN) |",
           "|---|---:|---:|---:|"]
    for name, f in rows:
        out.append(f"| {name} | {kb(f['wifi'])} | {kb(f['lora'])} | "
                   f"{f['wifi_sent']} / {f['lora_sent']} |")
    now = rows[1][1]
    out += [
        "",
        "- On WiFi the LoRaWAN code (the `polylink.lorawan` subpackage) leaves",
        "  the heap while MQTT carries the queue (`Node._lora_park`); the session's RAM state",
        "  (uplink counter, MAC answers not yet sent, duty-cycle clocks, the link's counters) is",
        "  kept in a tuple of a few hundred bytes and the rest is in `lorawan.json`. When WiFi",
        "  fails the code is imported again and goes on with the same session: no rejoin, no",
        "  counter block spent. On LoRaWAN, `mqtt.py` leaves the heap while WiFi is down",
        "  (`Link.drop_idle`). OTAA join code (`lorawan/join.py`) is loaded only while joining.",
        "- What unloading cannot give back: the interned names (qstrs) of every module once",
        "  imported, which MicroPython never frees (`tests/bench/unload_mem_probe.py`: the",
        f"  LoRaWAN set takes {kb(u['lora_import'])} and leaves {kb(u['lora_left'])} once",
        f"  dropped; `mqtt.py` {kb(u['mqtt_import'])} and {kb(u['mqtt_left'])}).",
        f"- **Still above the 40 KB target**: {kb(now['wifi'])} on WiFi, {kb(now['lora'])} on",
        "  LoRaWAN. Against the 56 KB Python heap of a Heltec WiFi LoRa 32 V2 (ESP32 without",
        "  PSRAM) the LoRaWAN figure leaves a few KB for a sample cycle (2.3 KB) and a downlink:",
        "  too tight to rely on. The way on a device is to freeze the app into the firmware",
        "  image (a MicroPython `manifest.py` with `package(\"polylink\")`): frozen bytecode and",
        "  its names stay in flash and only the node's objects live in the heap. Not measured",
        "  here: the wasm package cannot freeze modules.",
        "",
    ]
    return out


def update_doc(section):
    text = DOC.read_text(encoding="utf-8")
    if HEADING not in text:
        text = text.rstrip("\n") + "\n\n" + HEADING + "\n"
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
