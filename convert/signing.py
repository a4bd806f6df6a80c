"""Signing bundles with Ed25519: the key pair, and the detached signature over manifest.json.

    python -m convert keygen --out ~/.config/edge-rnn/keys       -> edge-rnn-signing.key (0600) + .pub
    python -m convert runs/NAME --sign-key ~/.config/edge-rnn/keys/edge-rnn-signing.key
    python -m convert sign artifacts/NAME --sign-key ...          (an existing bundle)

The private key never lives inside the repository (keygen and signing refuse
a path inside it, so it cannot be committed by accident) and must be readable
by its owner only. The device side (checking) is edge_runtime/signature.py.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from edge_runtime.bundle_files import MAX_MANIFEST_BYTES, BundleError, read_bundle_file, read_regular_file
from edge_runtime.manifest import MANIFEST_NAME, read_manifest
from edge_runtime.signature import MAX_KEY_BYTES, SIGNATURE_NAME, public_raw, signature_document

ROOT = Path(__file__).resolve().parents[1]
PRIVATE_NAME = "edge-rnn-signing.key"
PUBLIC_NAME = "edge-rnn-signing.pub"


class SigningError(ValueError):
    """A key that must not be made or used here; the message says why."""


def _outside_repository(path: Path, what: str) -> Path:
    resolved = path.expanduser().resolve()
    if resolved == ROOT or ROOT in resolved.parents:
        raise SigningError(f"{path}: {what} must be kept outside the repository ({ROOT.name}/), "
                           "e.g. under ~/.config/edge-rnn/keys")
    return resolved


def generate_keypair(out_dir: Path) -> tuple[Path, Path]:
    """A new Ed25519 key pair in out_dir: the private key (PEM, PKCS8, mode 0600) and the public key (PEM).
    Refuses to overwrite an existing key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = _outside_repository(Path(out_dir), "a signing key")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    private_path, public_path = folder / PRIVATE_NAME, folder / PUBLIC_NAME
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
    except FileExistsError:
        raise SigningError(f"{private_path}: a key is already there; not overwriting it") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: Path):
    """The Ed25519 private key at path: outside the repository, readable by its owner only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    resolved = _outside_repository(Path(path), "the signing key")
    try:
        mode = resolved.stat().st_mode
        data = read_regular_file(resolved, MAX_KEY_BYTES, "signing key")  # a FIFO or a folder: never a hang
    except OSError as e:
        raise SigningError(f"{path}: signing key cannot be read ({e.strerror})") from None
    except BundleError as e:
        raise SigningError(str(e).replace(str(resolved), str(path), 1)) from None
    if stat.S_IMODE(mode) & 0o077:
        raise SigningError(f"{path}: signing key is readable by others (mode {stat.S_IMODE(mode):o}); "
                           f"chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SigningError(f"{path}: not an unencrypted PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{path}: not an Ed25519 private key")
    return key


def signature_for(manifest_bytes: bytes, key) -> bytes:
    """The bytes of manifest.json.sig: key's signature over manifest_bytes, with its key id."""
    return signature_document(key.sign(manifest_bytes), public_raw(key.public_key()))


def sign_bundle(bundle: Path, key_path: Path) -> Path:
    """Sign an existing bundle's manifest.json (checked by the device's reader first); returns the .sig path."""
    key = load_private_key(key_path)
    bundle = Path(bundle)
    read_manifest(bundle)  # a bundle the device would refuse is not worth signing
    data = read_bundle_file(bundle, MANIFEST_NAME, MAX_MANIFEST_BYTES, "manifest")
    target = bundle / SIGNATURE_NAME
    fd, tmp = tempfile.mkstemp(dir=bundle, prefix=f".{SIGNATURE_NAME}.")
    with os.fdopen(fd, "wb") as f:
        f.write(signature_for(data, key))
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)  # a reader sees the old signature or the new one
    return target
