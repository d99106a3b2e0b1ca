"""tests/system-packages: the one check of Debian packages that `make test` and `.ci/run` share."""

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent / "system-packages"


def _run(tmp_path, have: list[str], uid: int):
    """Run the script with a PATH of stubs: `have` are the commands present, `id -u` says uid."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in have:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    return subprocess.run(["/bin/bash", str(SCRIPT)], env={"PATH": str(bin_dir)},
                          capture_output=True, text=True, timeout=30)


def test_a_person_without_chromium_is_told_the_command(tmp_path):
    proc = _run(tmp_path, ["make", "mosquitto", "node", "npm", "nginx", "python3"], uid=1000)
    assert proc.returncode == 1
    assert "missing: chromium" in proc.stderr
    assert "sudo apt-get install --no-install-recommends chromium" in proc.stderr


def test_nothing_missing_passes_quietly(tmp_path):
    proc = _run(tmp_path, ["make", "mosquitto", "node", "npm", "chromium", "nginx", "python3"],
                uid=1000)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""
