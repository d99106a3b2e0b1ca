"""Closing an asyncio stream so that the socket really goes, on every port."""


async def close(w):
    """Close writer w and its socket; never raises OSError.

    On MicroPython StreamWriter.close() does nothing: only wait_closed() closes the socket. A
    socket left to the garbage collector stays open meanwhile, and lwIP on an ESP32 has a
    handful (found on the Unix port: 23 sockets held after 23 reconnects, tests/host).
    For HTTP and claims; the resident MQTT link uses MQTTClient.close(), so that this module
    stays out of a running node's heap.
    """
    try:
        w.close()
        await w.wait_closed()
    except OSError:
        pass
