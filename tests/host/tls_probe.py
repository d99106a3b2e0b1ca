# Runs on the MicroPython Unix port (tests/host/test_unix_port_tls.py): one TLS connection
# through UnixHAL.open_connection, as the node's MQTT link opens it, then one line echoed.
# argv: lib folder, flash folder, host, port, CA file on flash ("-": tls without a CA).
import sys

sys.path.insert(0, sys.argv[1])
import asyncio  # noqa: E402

from polylink_host.unixhal import UnixHAL  # noqa: E402


async def main():
    hal = UnixHAL("probe", sys.argv[2], {})
    hal.wifi_connect("", "")
    ca = sys.argv[5]
    try:
        r, w = await hal.open_connection(sys.argv[3], int(sys.argv[4]),
                                         {"ca": ca} if ca != "-" else {})
        w.write(b"ping\n")
        await w.drain()
        line = await r.readline()
        w.close()
        await w.wait_closed()
        print("CONNECTED", line)
    except Exception as e:  # noqa: BLE001 -- the test reads what was refused and why
        print("REFUSED", type(e).__name__, e)


asyncio.run(main())
