"""Bundle signatures (issue 14): Ed25519 over manifest.json, which lists every file's sha256.

A bundle whose weights were changed and whose manifest sha256 was updated to match loads
without a trusted key (as before) and is refused with one; so are unsigned bundles and bundles
signed by another key, in `run`, `info`, `serve` and `deploy`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys

import pytest

import edge_runtime
from conftest import IN_PROCESS_BACKEND, ROOT, fails_if_blocked, python_env, run_cli
from convert.signing import SigningError, generate_keypair, load_private_key, sign_bundle
from deploy.release import (ReleaseError, build_release, choose_bundle, extra_packages, locked_requirements, pins,
                            require_signatures)
from edge_runtime import BundleError
from edge_runtime.signature import SIGNATURE_NAME
from model_bytes import largest_constant
from service_helpers import write_config

MODEL = "model.float32.tflite"
CSV = "index,indoor,outdoor\n0,20,5\n1,20.1,5\n"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """(private, public) of the signer, and the public key of someone else."""
    root = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(root / "ours")
    _, other_public = generate_keypair(root / "theirs")
    return private, public, other_public


@pytest.fixture
def signed(tmp_path, fixture_bundles, keys):
    copy = tmp_path / "bundle"
    shutil.copytree(fixture_bundles["lstm"][1], copy)
    sign_bundle(copy, keys[0])
    return copy


def tamper_consistently(bundle) -> None:
    """Change one weight byte and update the manifest's sha256 to match: self-consistent, not signed."""
    data = bytearray((bundle / MODEL).read_bytes())
    offset, _ = largest_constant(bytes(data))
    data[offset] ^= 0x01  # the lowest mantissa bit of one float32 weight: the model still opens
    (bundle / MODEL).write_bytes(bytes(data))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["variants"][0]["sha256"] = hashlib.sha256(data).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))


def test_keygen_writes_a_private_key_only_its_owner_can_read_and_never_inside_the_repo(keys, tmp_path):
    private, public, _ = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in public.read_bytes() and b"PRIVATE KEY" in private.read_bytes()
    with pytest.raises(SigningError, match="must be kept outside the repository"):
        generate_keypair(ROOT / "build" / "keys")
    with pytest.raises(SigningError, match="already there"):
        generate_keypair(private.parent)
    loose = tmp_path / "loose.key"
    shutil.copy(private, loose)
    os.chmod(loose, 0o644)
    with pytest.raises(SigningError, match="readable by others"):
        load_private_key(loose)


def test_a_key_path_that_is_a_fifo_or_a_folder_is_one_line_not_a_hang(tmp_path, signed):
    """--trusted-key, --sign-key and a release's config, each given a FIFO, used to block in open() forever."""
    from deploy.release import read_config

    fifo, folder = tmp_path / "fifo.pem", tmp_path / "folder.pem"
    os.mkfifo(fifo)
    folder.mkdir()
    for path, kind in ((fifo, "a FIFO"), (folder, "a directory")):
        with fails_if_blocked(20, f"reading {path.name}"), pytest.raises(BundleError, match=f"{path.name}: trusted key is {kind}, not a regular file"):
            edge_runtime.load(signed, backend=IN_PROCESS_BACKEND, trusted_key=path)
        with fails_if_blocked(20, f"reading {path.name}"), pytest.raises(SigningError, match=f"{path.name}: signing key is {kind}, not a regular file"):
            load_private_key(path)
        with fails_if_blocked(20, f"reading {path.name}"), pytest.raises(ReleaseError, match=f"{path.name}: config file is {kind}, not a regular file"):
            read_config(path)
    done = run_cli("edge_runtime", "run", str(signed), "--input", "-", "--trusted-key", str(fifo), stdin="", timeout=60)
    assert done.returncode == 2 and f"error: {fifo}: trusted key is a FIFO, not a regular file" in done.stderr


def test_keygen_cli(tmp_path):
    done = run_cli("convert", "keygen", "--out", str(tmp_path / "k"))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "k" / "edge-rnn-signing.key").stat().st_mode) == 0o600
    inside = run_cli("convert", "keygen", "--out", str(ROOT / "keys"))
    assert inside.returncode == 2 and "outside the repository" in inside.stderr
    assert not (ROOT / "keys").exists()


def test_a_signed_bundle_loads_with_its_key(signed, keys):
    model = edge_runtime.load(signed, backend=IN_PROCESS_BACKEND, trusted_key=keys[1])
    assert model.session().step([20.0, 5.0]).shape == (1,)


def test_a_tampered_but_self_consistent_bundle_loads_without_a_key_and_is_refused_with_one(signed, keys):
    tamper_consistently(signed)
    edge_runtime.load(signed, backend=IN_PROCESS_BACKEND)  # as before signing existed: sha256 all match
    with pytest.raises(BundleError, match="signature does not match manifest.json"):
        edge_runtime.load(signed, backend=IN_PROCESS_BACKEND, trusted_key=keys[1])
    for args in (("run", str(signed), "--input", "-"), ("info", str(signed))):
        done = run_cli("edge_runtime", *args, "--trusted-key", str(keys[1]), stdin=CSV)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0 and "signature does not match" in done.stderr


def test_an_unsigned_bundle_is_refused_with_a_key(signed, keys):
    (signed / SIGNATURE_NAME).unlink()
    with pytest.raises(BundleError, match="bundle is not signed"):
        edge_runtime.load(signed, backend=IN_PROCESS_BACKEND, trusted_key=keys[1])


def test_a_bundle_signed_by_another_key_is_refused(signed, keys):
    with pytest.raises(BundleError, match="signed by key '[0-9a-f]{16}', not by the trusted key"):
        edge_runtime.read_manifest(signed, trusted_key=keys[2])


def test_a_signature_copied_from_another_bundle_does_not_fit(signed, keys, fixture_bundles, tmp_path):
    other = tmp_path / "gru"
    shutil.copytree(fixture_bundles["gru"][1], other)
    shutil.copy(signed / SIGNATURE_NAME, other / SIGNATURE_NAME)
    with pytest.raises(BundleError, match="signature does not match"):
        edge_runtime.read_manifest(other, trusted_key=keys[1])


def test_a_garbled_signature_file_is_a_one_line_error(signed, keys):
    (signed / SIGNATURE_NAME).write_text('{"algorithm": "ed25519", "signature": "###"}')
    with pytest.raises(BundleError, match="malformed signature file") as refused:
        edge_runtime.read_manifest(signed, trusted_key=keys[1])
    assert "\n" not in str(refused.value)


def test_serve_with_a_trusted_key_refuses_a_tampered_bundle_at_start(signed, keys, tmp_path):
    tamper_consistently(signed)
    config = write_config(tmp_path / "svc", signed, "[sources.stdin]\n", '[sinks.jsonl]\npath = "out.jsonl"\n',
                          extra=f'trusted_key = "{keys[1]}"')
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "--config", str(config)],
                          input="", capture_output=True, text=True, timeout=60, env=python_env(), cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "cannot_start" in done.stderr and "signature does not match" in done.stderr


def test_deploy_refuses_a_tampered_bundle_and_ships_cryptography_and_the_key(signed, keys):
    assert choose_bundle(signed, None, trusted_key=keys[1]).name == "tiny-lstm-level-delta"
    tamper_consistently(signed)
    with pytest.raises(BundleError, match="signature does not match"):
        choose_bundle(signed, None, trusted_key=keys[1])
    text = require_signatures('bundle = "bundles/x"\n[sources.tcp]\n', {"bundle": "bundles/x"}, keys[1])
    assert text.startswith('trusted_key = "trusted_key.pub"')
    config = __import__("tomllib").loads(text)
    assert "cryptography" in extra_packages(config)
    pinned = pins()
    wanted = {"numpy": pinned["numpy"], "ai-edge-litert": pinned["ai-edge-litert"],
              "cryptography": pinned["cryptography"]}
    shipped = " ".join(locked_requirements(wanted, "ai-edge-litert"))
    assert "cryptography==" in shipped and "cffi==" in shipped  # and what cryptography needs
    with pytest.raises(ReleaseError, match="pass --trusted-key"):
        require_signatures(text, config, None)


def test_a_release_with_a_trusted_key_ships_the_key_the_signature_and_cryptography(signed, keys, tmp_path):
    release = build_release([signed], out_root=tmp_path / "releases", log=lambda m: None, trusted_key=keys[1])
    folder, name = release.path, release.info["bundles"][0]["name"]
    assert (folder / "trusted_key.pub").read_bytes() == keys[1].read_bytes()
    assert (folder / "bundles" / name / SIGNATURE_NAME).is_file()
    assert (folder / "edge.toml").read_text().startswith('trusted_key = "trusted_key.pub"')
    assert release.info["trusted_key"] == "trusted_key.pub"
    assert any(w.name.startswith("cryptography-") for w in (folder / "wheels").glob("*.whl"))
    assert "cryptography==" + pins()["cryptography"] in release.info["install"]
    # the released bundle verifies against the released key, as the device will check it
    edge_runtime.read_manifest(folder / "bundles" / name, trusted_key=folder / "trusted_key.pub")
