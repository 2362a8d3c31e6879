"""float16 export, stored confidence curves and re-rankers of a trained bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from models.bundle import BundleError, export_bundle, load_bundle, write_calibration, write_sgraf
from models.calibration import Calibration, Curve
from models.rerank import SetFeatures, rerankers_of
from models.sgraf import Sgraf, SgrafConfig, SgrafReranker
from service.cli import main
from tests.bundles import save_tiny_base, train_args

TEXTS = ["김치찌개", "a plate of pasta", "bibimbap with egg"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    out = root / "bundle"
    assert main(train_args(save_tiny_base(root), out, "--epochs", "3")) == 0
    return out


def test_export_halves_the_weights_and_keeps_the_vectors(trained: Path, tmp_path: Path) -> None:
    out = export_bundle(trained, tmp_path / "half")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        dtypes = {str(f.get_tensor(name).dtype) for name in f.keys()}  # noqa: SIM118
    assert dtypes == {"torch.float16"}
    assert (out / "model.safetensors").stat().st_size < 0.6 * (
        trained / "model.safetensors"
    ).stat().st_size
    original, half = load_bundle(trained), load_bundle(out)
    assert half.fingerprint != original.fingerprint  # other weights, other snapshots
    np.testing.assert_allclose(half.encode_texts(TEXTS), original.encode_texts(TEXTS), atol=5e-3)
    assert json.loads((out / "bundle.json").read_text())["weights_dtype"] == "float16"


def test_export_refuses_an_occupied_directory(trained: Path, tmp_path: Path) -> None:
    export_bundle(trained, tmp_path / "half")
    with pytest.raises(BundleError, match="already holds"):
        export_bundle(trained, tmp_path / "half")


def test_calibration_is_stored_without_changing_the_fingerprint(
    trained: Path, tmp_path: Path
) -> None:
    out = export_bundle(trained, tmp_path / "calibrated")
    before = load_bundle(out)
    assert before.calibration is None
    curves = Calibration({"image->recipe": Curve(9.0, -3.0), "*->*": Curve(4.0, -2.0)})
    write_calibration(out, curves, {"ece": 0.01})
    after = load_bundle(out)
    assert after.fingerprint == before.fingerprint
    assert after.calibration == curves
    assert json.loads((out / "bundle.json").read_text())["calibration_report"] == {"ece": 0.01}


def test_a_malformed_calibration_is_refused_at_load(trained: Path, tmp_path: Path) -> None:
    out = export_bundle(trained, tmp_path / "broken")
    meta = json.loads((out / "bundle.json").read_text())
    meta["calibration"] = {"*->*": {"a": -1.0, "b": 0.0}}
    (out / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="calibration"):
        load_bundle(out)


def _sample_features(dim: int) -> tuple[SetFeatures, list[SetFeatures]]:
    rng = np.random.default_rng(0)
    sample = [rng.standard_normal((n, dim)).astype(np.float32) for n in (3, 1, 2, 4)]
    features = [SetFeatures(parts, parts.mean(0)) for parts in sample]
    return features[0], features[1:]


def test_sgraf_reranker_travels_in_the_bundle_without_changing_the_fingerprint(
    trained: Path, tmp_path: Path
) -> None:
    out = export_bundle(trained, tmp_path / "reranked")
    before = load_bundle(out)
    assert dict(rerankers_of(before)) == {}
    torch.manual_seed(0)
    sgraf = Sgraf(SgrafConfig(dim=before.dim, sim_dim=8, steps=2))
    write_sgraf(out, sgraf)
    after = load_bundle(out)
    assert after.fingerprint == before.fingerprint  # no vector changed: snapshots stay valid
    query, candidates = _sample_features(before.dim)
    expected = SgrafReranker(sgraf).score(query, candidates)
    np.testing.assert_allclose(rerankers_of(after)["sgraf"].score(query, candidates), expected)
    # An export carries it too, in float16.
    half = rerankers_of(load_bundle(export_bundle(out, tmp_path / "half")))["sgraf"]
    np.testing.assert_allclose(half.score(query, candidates), expected, atol=5e-3)


def test_changed_reranker_weights_are_refused(trained: Path, tmp_path: Path) -> None:
    out = export_bundle(trained, tmp_path / "tampered")
    write_sgraf(out, Sgraf(SgrafConfig(dim=load_bundle(out).dim, sim_dim=8)))
    with open(out / "sgraf.safetensors", "ab") as fp:
        fp.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(out)
