"""A/B app slots: which one boots, the atomic switch, the trial boots and the revert.

The flash holds the factory app at the root (/polylink) and two slots, /a and /b, each a whole app
with its manifest. One small file, `slot`, says which boots; it is only ever replaced by a rename,
so a power cut leaves either the old or the new pointer, never a mix (docs/ota.md). boot.py calls
boot() on every start; the OTA agent calls switch(), confirm() and revert().
"""

import json
import os

POINTER = "slot"
MAX_TRIAL_BOOTS = 3  # boots a new version gets to confirm its health before boot() reverts

# Rolled-back reasons: codes.CRASH_LOOP and codes.NOT_CONFIRMED, kept here because boot.py and
# every start load this module, and codes.py would cost the heap its names (tests/test_codes.py).
CRASH_LOOP = 11
NOT_CONFIRMED = 12



def slot_dir(root, name):
    """The directory of slot name ("" is the factory app at the root)."""
    return root + "/" + name if name else root


def read(root) -> dict:
    """The pointer as a dict; the factory app's state when there is none yet."""
    for name in (POINTER, POINTER + ".tmp"):
        # .tmp is only read when the pointer is missing: a FAT rename that removed the old file
        # and lost power before the new name was in place (littlefs renames atomically).
        try:
            with open(root + "/" + name) as f:
                st = json.load(f)
            if isinstance(st, dict) and "active" in st:
                return st
        except (OSError, ValueError):
            pass
    return {"active": "", "prev": "", "trial": 0, "boots": 0, "version": None,
            "prev_version": None, "rid": None, "rolled_back": None}


def write(root, st) -> None:
    """Replace the pointer atomically: the whole new file, then one rename."""
    # Start-up time: boot.py loads this module on every boot, store.py is needed only here
    from polylink.store import replace

    tmp = root + "/" + POINTER + ".tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    replace(tmp, root + "/" + POINTER)


def floor(st, fw):
    """The oldest version an update may bring without a signed downgrade: the one last confirmed
    (fw, the running version, for a pointer written before the floor was kept)."""
    return st.get("floor") or fw


def inactive(st) -> str:
    """The slot an update may be staged into: never the one running, never the fallback."""
    return "b" if st["active"] == "a" else "a"


def boot(root) -> str:
    """Count a trial boot, revert after too many; return the slot directory to run from."""
    st = read(root)
    if st["trial"]:
        st["boots"] += 1
        if st["boots"] > MAX_TRIAL_BOOTS:
            st = _reverted(st, CRASH_LOOP)
        write(root, st)
    d = slot_dir(root, st["active"])
    if st["active"]:
        try:
            os.stat(d + "/manifest.json")
        except OSError:
            # A slot without its manifest was never switched to whole; the factory app runs.
            st = read(root)
            st["active"] = ""
            st["trial"] = 0
            write(root, st)
            d = root
    return d


def _reverted(st, reason):
    return {"active": st["prev"], "prev": st["prev"], "trial": 0, "boots": 0,
            "version": st["prev_version"], "prev_version": st["prev_version"], "rid": st["rid"],
            "rolled_back": {"version": st["version"], "reason": reason},
            "floor": st.get("floor")}


def switch(root, slot, version, rid, runtime=None) -> None:
    """Make slot the one that boots next, on trial; the running one becomes the fallback.

    runtime: the app partition label of a new MicroPython runtime the trial version expects.
    """
    st = read(root)
    st.pop("was", None)
    new = {"active": slot, "prev": st["active"], "trial": 1, "boots": 0, "version": version,
           "prev_version": st["version"], "rid": rid, "rolled_back": None, "was": st,
           "floor": st.get("floor") or st["version"]}
    if runtime:
        new["runtime"] = runtime
    write(root, new)


def undo_switch(root) -> None:
    """Take back a switch() before any reboot (the runtime image was refused): the old pointer."""
    st = read(root)
    if st.get("was") is not None:
        write(root, st["was"])


def confirm(root) -> None:
    """The running trial version proved healthy: keep it, and refuse older ones from now on."""
    st = read(root)
    # In the same atomic write as the confirmation: a cut leaves both old or both new. A signed
    # downgrade lowers the floor to itself, so a fix built on it can follow.
    st["floor"] = st["version"]
    st["trial"] = 0
    st["boots"] = 0
    write(root, st)


def revert(root, reason) -> None:
    """Give up on the running trial version: the fallback boots next."""
    st = read(root)
    if st["trial"]:
        write(root, _reverted(st, reason))


def clear_rolled_back(root) -> None:
    """The rollback was reported: forget it."""
    st = read(root)
    if st.get("rolled_back"):
        st["rolled_back"] = None
        write(root, st)
