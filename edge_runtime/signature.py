"""Ed25519 signatures over a bundle's manifest.json: who made the bundle.

manifest.json lists the sha256 and size of every file the runtime opens (each
variant's model and its batched and resident companions; the reader refuses any other), so
one signature over its exact bytes covers the whole bundle. `convert` signs
with a private key kept outside the repository (convert/signing.py); the
signature is a detached file beside the manifest:

    manifest.json.sig   {"algorithm": "ed25519", "key_id": "<sha256 of the raw public key, 16 hex>",
                         "signature": "<base64 of the 64-byte signature>"}

A device that is given a trusted public key (PEM) refuses a bundle that is
unsigned, signed by another key, or whose manifest changed after signing:
without one it loads any bundle, as before signing existed. The check runs
on the manifest bytes the reader then parses, so nothing can change between
the two. `cryptography` is imported only when a key is configured, so a
device that does not verify does not need it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from pathlib import Path

from edge_runtime.bundle_files import BundleError, clip, read_bundle_file, read_regular_file

SIGNATURE_NAME = "manifest.json.sig"
ALGORITHM = "ed25519"
MAX_SIGNATURE_BYTES = 4096
MAX_KEY_BYTES = 16384


def key_id(public_raw: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def _crypto():
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        raise BundleError("a trusted key is configured but the 'cryptography' package is not installed "
                          "(pip install cryptography; deploy ships it when a trusted key is configured)") from None
    return InvalidSignature, serialization, Ed25519PublicKey


def load_public_key(path: str | Path):
    """The Ed25519 public key in a PEM file; BundleError naming the file otherwise."""
    _, serialization, Ed25519PublicKey = _crypto()
    path = Path(path)
    data = read_regular_file(path, MAX_KEY_BYTES, "trusted key")  # a FIFO or a folder: one line, never a hang
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as e:
        raise BundleError(f"{path}: not a PEM public key ({clip(str(e), 120)})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path}: the trusted key is not an Ed25519 public key")
    return key


def public_raw(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def signature_document(signature: bytes, public: bytes) -> bytes:
    """The bytes of manifest.json.sig for a signature made with the key whose raw public bytes are `public`."""
    return (json.dumps({"algorithm": ALGORITHM, "key_id": key_id(public),
                        "signature": base64.b64encode(signature).decode()}, indent=1) + "\n").encode()


def verify_manifest(bundle: Path, manifest_bytes: bytes, trusted_key: str | Path) -> None:
    """Refuse (BundleError, one line) unless bundle/manifest.json.sig is a valid signature of
    manifest_bytes by the trusted key."""
    InvalidSignature, _, _ = _crypto()
    key = load_public_key(trusted_key)
    trusted_id = key_id(public_raw(key))
    where = Path(bundle) / SIGNATURE_NAME
    if not (where.is_symlink() or where.exists()):
        raise BundleError(f"{bundle}: bundle is not signed (no {SIGNATURE_NAME}) and a trusted key "
                          f"({trusted_id}) is required")
    data = read_bundle_file(bundle, SIGNATURE_NAME, MAX_SIGNATURE_BYTES, "signature")
    try:
        document = json.loads(data.decode("utf-8"))
        if document.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {document.get('algorithm')!r}, not {ALGORITHM}")
        signature = base64.b64decode(document["signature"], validate=True)
        signer = str(document.get("key_id", "?"))[:16]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise BundleError(f"{where}: malformed signature file ({clip(str(e), 120)})") from None
    if signer != trusted_id:
        raise BundleError(f"{where}: signed by key {signer!r}, not by the trusted key {trusted_id}")
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise BundleError(f"{where}: the signature does not match manifest.json (the manifest was changed "
                          "after it was signed)") from None
