"""A bundle the device cannot trust is refused, with an error that names the problem."""
from __future__ import annotations


import pytest

import edge_runtime
from conftest import IN_PROCESS_BACKEND, copy_bundle, edit_manifest, run_cli
from edge_runtime import BundleError


@pytest.fixture
def bundle(tmp_path, fixture_bundles):
    return copy_bundle(fixture_bundles, tmp_path)


def load(bundle):
    return edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND)


def test_the_untouched_copy_loads(bundle):
    assert load(bundle).session().step([20.0, 5.0]).shape == (1,)


def test_flipped_byte_in_the_model_is_refused(bundle):
    model_file = bundle / "model.float32.tflite"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_file.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.float32\.tflite: sha256 mismatch"):
        load(bundle)


def test_missing_model_file_is_refused(bundle):
    (bundle / "model.float32.tflite").unlink()
    with pytest.raises(BundleError, match=r"model\.float32\.tflite: model file listed in the manifest is missing"):
        load(bundle)


def test_missing_manifest_is_refused(bundle):
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json: missing"):
        load(bundle)


def test_unknown_schema_version_is_refused(bundle):
    edit_manifest(bundle, lambda m: m.update(schema_version=99))
    with pytest.raises(BundleError, match="unsupported schema_version 99 .this runtime reads version 1"):
        load(bundle)


def test_state_shape_disagreeing_with_the_model_is_refused(bundle):
    def widen_h0(m):
        next(s for s in m["state"] if s["name"] == "h0")["shape"] = [1, 9]
    edit_manifest(bundle, widen_h0)
    with pytest.raises(BundleError, match=r"input 'h0' has shape \[1, 8\] in the model but \[1, 9\] in the manifest"):
        load(bundle)


def test_state_the_model_does_not_have_is_refused(bundle):
    edit_manifest(bundle, lambda m: m["state"].append({"name": "h7", "shape": [1, 8], "dtype": "float32"}))
    with pytest.raises(BundleError, match=r"signature has no input 'h7'"):
        load(bundle)


def test_manifest_that_is_not_json_is_refused(bundle):
    (bundle / "manifest.json").write_text("{ not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load(bundle)


def test_cli_reports_a_bad_bundle_without_a_traceback(bundle):
    (bundle / "model.float32.tflite").write_bytes(b"\x00" * 16)
    done = run_cli("edge_runtime", "run", str(bundle), "--input", "-", stdin="index,indoor,outdoor\n0,20,5\n")
    assert done.returncode == 2
    assert "error:" in done.stderr and "size 16 bytes, manifest says" in done.stderr
    assert "Traceback" not in done.stderr
