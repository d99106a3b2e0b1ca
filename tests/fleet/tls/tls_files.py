"""Write certificates and keys as PEM files, as an operator would hand them over."""

from cryptography.hazmat.primitives import serialization


def write(d, **items):
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, obj in items.items():
        if hasattr(obj, "private_bytes"):
            data = obj.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        else:
            data = obj.public_bytes(serialization.Encoding.PEM)
        (d / f"{name}.pem").write_bytes(data)
        out[name] = d / f"{name}.pem"
    return out
