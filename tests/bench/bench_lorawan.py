"""LoRaWAN budgets of the reference reading: uplinks per day within TTN fair use and duty cycle.

Airtime from polylink.region_eu868.airtime_us (Semtech formula, the one the firmware enforces),
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
from polylink import region_eu868 as eu

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
           "| app loaded from | lw_crypto + region_eu868 | lorawan | lw_link | lw_split | total |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, f in rows:
        out.append(f"| {name} | {kb(f['crypto_region'])} | {kb(f['lorawan'])} | "
                   f"{kb(f['lw_link'])} | {kb(f['lw_split'])} | {kb(f['total'])} |")
    out.append("")
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
