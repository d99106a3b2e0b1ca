"""Writes tests/vectors/runtime_v1.json: ESP32 app images (made with esptool's image classes, as
a MicroPython build makes them) and a signed release carrying one as its runtime image, for the
node's runtime update under CPython and MicroPython.

    .venv/bin/python tests/vectors/make_runtime_vectors.py

app_image() is also what the fleet and host tests use to make runtime images.
"""

import base64
import hashlib
import json
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from esptool.bin_image import ELFSection, ESP32FirmwareImage, ESP32S3FirmwareImage

from fleet.ota import releases as ota

OUT = Path(__file__).with_name("runtime_v1.json")
APP_DESC_MAGIC = 0xABCD5432
IMAGES = {"esp32": ESP32FirmwareImage, "esp32s3": ESP32S3FirmwareImage}


def app_image(chip="esp32", version="1.25.0", size=75000, app_desc=True) -> bytes:
    """A well-formed ESP-IDF app image of about size bytes whose banner says MicroPython version.

    Its first segment starts with the app descriptor (esp_app_desc_t, magic 0xABCD5432) as every
    ESP-IDF app's does; the banner sits in the read-only data as in a real MicroPython build.
    """
    desc = struct.pack("<II8x", APP_DESC_MAGIC if app_desc else 0, 0)
    desc += f"v{version}".encode().ljust(32, b"\0")
    desc += b"micropython".ljust(32, b"\0") + bytes(256 - len(desc) - 32)
    banner = f"MicroPython v{version} on 2025-04-15; Generic ESP32 module with {chip.upper()}"
    rodata = desc + banner.encode() + b"\0"
    filler = hashlib.sha256(version.encode()).digest() * (max(0, size - 3200) // 32)
    img = IMAGES[chip]()
    img.segments = [ELFSection(b".flash.rodata", 0x3F400020, rodata + filler, 0),
                    ELFSection(b".dram0.data", 0x3FFB0000, b"\x11" * 1000, 0),
                    ELFSection(b".iram0.text", 0x40080000, b"\x22" * 2000, 0)]
    img.entrypoint = 0x40080400
    return img.save(None)


def main():
    k1 = ec.generate_private_key(ec.SECP256R1())
    image = app_image("esp32", "1.25.0")
    files = {"polylink/app.txt": b"new app\n" * 40}
    entries = [{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
               for p, b in files.items()]
    rt = {"sha256": hashlib.sha256(image).hexdigest(), "size": len(image),
          "micropython": "1.25.0", "chip": "esp32"}
    manifest = ota.manifest_bytes("0.3.0", "k1", ["ESP32_GENERIC_OTA"], entries,
                                  created=1764288000, runtime=rt)
    OUT.write_text(json.dumps({
        "description": __doc__.split("\n\n")[0],
        "image": base64.b64encode(image).decode(),
        "s3_image": base64.b64encode(app_image("esp32s3", "1.25.0", 9000)).decode(),
        "release": {"keys": {"k1": ota.public_hex(k1)}, "manifest": manifest.decode(),
                    "sig": ota.sign(k1, "k1", manifest),
                    "files": {hashlib.sha256(b).hexdigest(): b.decode() for b in files.values()}},
    }, indent=1) + "\n")


if __name__ == "__main__":
    main()
