"""On the device: read the config, build the ESP32 HAL, run the node application."""

import asyncio
import json


def _on_trial():
    try:
        with open("/slot") as f:
            return bool(json.load(f).get("trial"))
    except (OSError, ValueError):
        return False


def main():
    hal = None
    try:
        # Imported inside the try, not for RAM: a release whose modules fail to import must
        # still reset (below), so a trial boot is counted and reverted.
        from polylink import config
        from polylink.hal.esp32 import HAL
        from polylink.node import Node

        # The board is read first so the HAL knows its pins; the node id defaults to the chip id.
        try:
            board = config.load_board("")
            hal = HAL(board)
            cfg = config.load("", default_node="pl-" + hal.unique_id(), board=board)
        except config.ConfigError as e:
            # Stop at the REPL with one clear line for whoever fixes the files; no reset loop.
            print("polylink: cannot start:", e)
            if _on_trial():
                raise  # ... unless a new release brought the rule: reset, so it is reverted
            return
        if cfg.claim is not None:
            # A generic image: ask the fleet for this board's identity, then boot as that node.
            # (Device RAM: only an unclaimed node loads the claim code.)
            from polylink import claim

            try:
                asyncio.run(claim.run(hal, cfg, ""))
            except claim.ClaimError as e:
                print("polylink: claim refused:", e)
                return
            hal.reset()
        asyncio.run(Node(hal, cfg).run())
    except Exception as e:
        print("polylink: crashed:", e)
        if not _on_trial():
            raise
        # A new release that crashes resets, so boot.py counts the boot and reverts in time
        # (docs/ota.md).
        if hal is not None:
            hal.reset()
        _reset_without_hal()


def _reset_without_hal():
    """Reset when no HAL object was built (the board file, the config or a module failed).

    Through a HAL module's board-free reset(): the running slot's, or, if the release broke that
    module too, the factory app's at the flash root, which no update ever writes.
    """
    import sys

    try:  # at the call, not for RAM: this import is what may fail
        from polylink.hal import esp32 as hal_esp32
    except Exception:  # noqa: BLE001 - whatever broke the release's HAL, the factory one works
        for name in list(sys.modules):
            if name == "polylink" or name.startswith("polylink."):
                del sys.modules[name]
        del sys.path[0]  # the slot directory boot.py put first (only a slot is on trial)
        from polylink.hal import esp32 as hal_esp32
    hal_esp32.reset()


main()
