"""On the device: read the config, build the ESP32 HAL, run the node application."""

import asyncio

from polylink import config
from polylink.hal_esp32 import HAL
from polylink.node import Node


def main():
    # The board is read first so the HAL knows its pins; the node id defaults to the chip id.
    try:
        board = config.load_board("")
        hal = HAL(board)
        cfg = config.load("", default_node="pl-" + hal.unique_id(), board=board)
    except config.ConfigError as e:
        # Stop at the REPL with one clear line for whoever fixes the files; no reset loop.
        print("polylink: cannot start:", e)
        return
    if cfg.claim is not None:
        # A generic image: ask the fleet for this board's identity, then boot as that node.
        from polylink import claim

        try:
            asyncio.run(claim.run(hal, cfg, ""))
        except claim.ClaimError as e:
            print("polylink: claim refused:", e)
            return
        hal.reset()
    asyncio.run(Node(hal, cfg).run())


main()
