"""OTA signing keys: the platform's and each organisation's, who signs with which, and the keys
each organisation's nodes trust (docs/ota.md, "Keys of organisations").

The platform operator's keys are files: the public halves in DATA_DIR/ota/trusted_keys.json,
which every node trusts. An organisation's keys are recorded in the store with their owner
(fleet/store/ota.py). Every private half is DATA_DIR/ota/keys/<id>.pem (0600). What a caller may
do is decided by the scope of the db it passes (none: the platform's, as before organisations).
"""

import json
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.store import identity as identity_store
from fleet.store import orgs as orgs_store
from fleet.store import ota as ota_store
from fleet.store.base import DuplicateName
from fleet.store.scope import PLATFORM_ORG, scope_of

KEYS_DIR = "ota/keys"
TRUSTED = "ota/trusted_keys.json"  # read by provisioning (identity/provision.py) for new nodes
KEY_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}\Z")


class ReleaseError(ValueError):
    """A release or key cannot be built, accepted or used; the message says what was wrong."""



def _trusted_path(settings) -> Path:
    return Path(settings.data_dir) / TRUSTED


def trusted_keys(settings) -> dict[str, str]:
    """{key id: public key hex} the fleet accepts releases from and gives new nodes."""
    path = _trusted_path(settings)
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _write_trusted(settings, keys: dict) -> None:
    path = _trusted_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(keys, indent=1, sort_keys=True))
    os.replace(tmp, path)


def public_hex(private_key) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint).hex()


def acts_as_platform(db) -> bool:
    """Whether db acts as the platform operator (no db: the platform's own keys, as before)."""
    return db is None or scope_of(db).platform


def org_of(db) -> int:
    return PLATFORM_ORG if db is None else scope_of(db).org_id


def release_org(db, for_org: int | None) -> int:
    """The organisation a release built or uploaded through db is for: db's own, or for_org when
    the platform builds one for an organisation (only the platform may)."""
    if for_org is None:
        return org_of(db)
    if not acts_as_platform(db):
        raise ReleaseError("only the platform operator builds a release for another "
                           "organisation (signed with a platform key)")
    return int(for_org)


def organisation_id(db, name: str) -> int:
    """The id of the organisation named, for the platform building a release for it."""
    release_org(db, PLATFORM_ORG)  # refused before the name is looked up: nothing of it leaks
    return orgs_store.get_organisation(db, name)["id"]


def keys_for(settings, db, org_id: int) -> dict[str, str]:
    """{key id: public hex} the nodes of an organisation trust: the platform's keys and the
    organisation's own, never another organisation's (a release of it carries exactly these,
    and a node registered in it is given them)."""
    keys = dict(trusted_keys(settings))
    if db is not None and org_id != PLATFORM_ORG:
        keys.update(ota_store.org_keys(db, org_id))
    return keys


def create_key(settings, key_id: str, db=None, actor=None) -> str:
    """Make a new signing key of db's organisation (no db, or the platform's scope: a platform
    key, which every node trusts). Return the public hex.

    A platform key's public half joins DATA_DIR/ota/trusted_keys.json; an organisation's is
    recorded in the store with its owner. The private half is DATA_DIR/ota/keys/ID.pem either way.
    """
    if not KEY_ID_RE.match(key_id or ""):
        raise ReleaseError(f"key id {key_id!r} must be 1..32 of a-z, 0-9, '-'")
    keys = trusted_keys(settings)
    path = Path(settings.data_dir) / KEYS_DIR / f"{key_id}.pem"
    # Ids are unique across the platform: a node names the keys it trusts by id alone.
    if key_id in keys or path.exists() or (db is not None and ota_store.key_org(db, key_id)):
        raise ReleaseError(f"key {key_id} already exists")
    key = ec.generate_private_key(ec.SECP256R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = public_hex(key)
    if acts_as_platform(db):
        keys[key_id] = pub
        _write_trusted(settings, keys)
    else:
        try:
            ota_store.add_org_key(db, key_id, pub, actor)
        except DuplicateName:
            path.unlink()
            raise ReleaseError(f"key {key_id} already exists") from None
    return pub


def list_keys(settings, db=None) -> list[dict]:
    """The keys db's organisation sees: the platform's (platform=True) and its own (the
    platform's scope: every organisation's), each with its owner and whether this organisation
    can sign with it (it holds the private half, and the key is its own)."""
    d = Path(settings.data_dir) / KEYS_DIR
    mine = acts_as_platform(db)
    out = [{"id": k, "public": v, "platform": True, "org": None,
            "can_sign": mine and (d / f"{k}.pem").exists()}
           for k, v in trusted_keys(settings).items()]
    if db is not None:
        org = org_of(db)
        out += [{"id": r["id"], "public": r["public"], "platform": False, "org": r["org"],
                 "can_sign": not mine and r["org_id"] == org and (d / f"{r['id']}.pem").exists()}
                for r in ota_store.list_org_keys(db)]
    return sorted(out, key=lambda k: k["id"])


def nodes_needing(db, key_id: str, keys: dict) -> list[str]:
    """Nodes (of db's organisation) that trust key_id and none of keys (by what they reported or
    were provisioned with): once key_id is gone they can only be updated by reflashing."""
    return sorted(n for n, ids in identity_store.trusted_key_ids(db, owned=True).items()
                  if ids and key_id in ids and not set(ids) & set(keys))


def retire_key(settings, key_id: str, db=None, force: bool = False, actor=None) -> None:
    """Stop trusting a key for new releases and new nodes (nodes already flashed keep it).

    An organisation retires only its own keys; the platform operator its own and, for a key
    that leaked, an organisation's. With db: refused while nodes trust only this key (they would
    be stranded), unless force.
    """
    platform_keys = trusted_keys(settings)
    if key_id in platform_keys:
        if not acts_as_platform(db):
            raise ReleaseError(f"key {key_id} is the platform's: an organisation retires only "
                               "its own keys (`fleet keys list` marks the platform's)")
    elif db is None or not (owner := ota_store.key_org(db, key_id)) or (
            not acts_as_platform(db) and owner != org_of(db)):
        raise ReleaseError(f"no trusted key {key_id}" if acts_as_platform(db) else
                           f"no key {key_id} of this organisation (it retires only its own "
                           "keys: `fleet keys list`)")
    if db is not None and not force:
        everyone = {**platform_keys, **ota_store.org_keys_all(db)}
        rest = {k: v for k, v in everyone.items() if k != key_id}
        stranded = nodes_needing(db, key_id, rest)
        if stranded:
            raise ReleaseError(
                f"{len(stranded)} node(s) trust no other key than {key_id} "
                f"({', '.join(stranded[:5])}{', ...' if len(stranded) > 5 else ''}): retired, "
                f"they could only be updated by reflashing. First roll out a release signed "
                f"with {key_id} (it carries the fleet's other keys: `fleet release build "
                f"VERSION --key {key_id}`), or retire anyway with --force")
    if key_id in platform_keys:
        del platform_keys[key_id]
        _write_trusted(settings, platform_keys)
    else:
        ota_store.delete_org_key(db, key_id, actor)
    pem = Path(settings.data_dir) / KEYS_DIR / f"{key_id}.pem"
    if pem.exists():
        pem.unlink()


def signing_key(settings, key_id: str | None, db=None):
    """(key id, private key) db's organisation signs with: key_id, or its newest key. An
    organisation signs only with its own keys, the platform only with the platform's."""
    signable = [k["id"] for k in list_keys(settings, db) if k["can_sign"]]
    if key_id is None:
        if not signable:
            raise ReleaseError("no signing key; create one with `fleet keys create KEY_ID`")
        key_id = signable[-1]
    if key_id not in signable:
        if not acts_as_platform(db):
            why = ("is the platform's, which signs only the platform's releases"
                   if key_id in trusted_keys(settings) else "is not one of this organisation's")
            raise ReleaseError(f"key {key_id} {why}: an organisation signs with its own keys "
                               f"({', '.join(signable) or 'none yet: `fleet keys create KEY_ID`'})")
        raise ReleaseError(f"no private key for {key_id} in this fleet (keys: "
                           f"{', '.join(signable) or 'none'})")
    pem = (Path(settings.data_dir) / KEYS_DIR / f"{key_id}.pem").read_bytes()
    return key_id, serialization.load_pem_private_key(pem, None)
