"""Ensembles of bundles: concatenated member vectors, averaged cosines, one deployable folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.bundle import BundleError, load_bundle
from models.encoders.base import fuse_modalities
from models.ensemble import EnsembleEncoder, is_ensemble, load_ensemble, save_ensemble
from models.registry import load_encoder
from service.cli import main
from tests.bundles import sample_inputs, save_tiny_base, train_args

# The members are trained bundles.
pytestmark = pytest.mark.slow

DIM = 32


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("ensemble-members")
    base = save_tiny_base(root)
    outs = [root / "a", root / "b"]
    for seed, out in enumerate(outs):
        assert main(train_args(base, out, "--epochs", "5", "--seed", str(seed))) == 0
    return outs


@pytest.fixture(scope="module")
def ensemble_dir(members: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "e"
    args = ["ensemble", "--member", str(members[0]), "--member", str(members[1])]
    assert main([*args, "--out", str(out)]) == 0
    return out


def test_vectors_are_the_members_side_by_side(members: list[Path], ensemble_dir: Path) -> None:
    ensemble = load_encoder(f"bundle:{ensemble_dir}", device="cpu")
    assert isinstance(ensemble, EnsembleEncoder) and ensemble.dim == 2 * DIM
    singles = [load_bundle(m) for m in members]
    images, texts, recipes = sample_inputs()
    for encode, inputs in (
        ("encode_images", images),
        ("encode_texts", texts),
        ("encode_recipes", recipes),
    ):
        joined = getattr(ensemble, encode)(inputs)
        parts = [getattr(s, encode)(inputs) for s in singles]
        np.testing.assert_allclose(joined, np.hstack(parts) / np.sqrt(2), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(joined, axis=1), 1.0, atol=1e-5)
        # The point of the layout: one inner product is the mean of the members' cosines.
        mean_cosine = np.mean([p @ p[::-1].T for p in parts], axis=0)
        np.testing.assert_allclose(joined @ joined[::-1].T, mean_cosine, atol=1e-5)
    assert ensemble.encode_texts([]).shape == (0, 2 * DIM)


def test_members_fuse_their_own_halves(members: list[Path], ensemble_dir: Path) -> None:
    ensemble = load_ensemble(ensemble_dir)
    singles = [load_bundle(m) for m in members]
    images, texts, _ = sample_inputs()
    parts = {"image": ensemble.encode_images(images[:1]), "text": ensemble.encode_texts(texts[:1])}
    fused = fuse_modalities(ensemble, parts)
    expected = [
        fuse_modalities(
            s, {"image": s.encode_images(images[:1]), "text": s.encode_texts(texts[:1])}
        )
        for s in singles
    ]
    np.testing.assert_allclose(fused, np.concatenate(expected) / np.sqrt(2), atol=1e-5)


def test_fingerprint_is_stable_and_names_the_members(
    members: list[Path], ensemble_dir: Path, tmp_path: Path
) -> None:
    first, again = load_ensemble(ensemble_dir), load_ensemble(ensemble_dir)
    assert first.fingerprint == again.fingerprint and first.fingerprint.startswith("ensemble-")
    assert first.fingerprint not in {load_bundle(m).fingerprint for m in members}
    swapped = save_ensemble(tmp_path / "swapped", members[::-1])
    assert load_ensemble(swapped).fingerprint != first.fingerprint  # the order is the layout


def test_the_folder_is_self_contained(ensemble_dir: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(ensemble_dir, moved)
    texts = sample_inputs()[1]
    np.testing.assert_array_equal(
        load_ensemble(moved).encode_texts(texts), load_ensemble(ensemble_dir).encode_texts(texts)
    )
    assert is_ensemble(moved) and not is_ensemble(moved / "members" / "0")


def test_a_member_changed_after_assembly_is_refused(
    members: list[Path], ensemble_dir: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(ensemble_dir, changed)
    shutil.rmtree(changed / "members" / "1")
    shutil.copytree(members[0], changed / "members" / "1")
    with pytest.raises(BundleError, match="fingerprint"):
        load_encoder(f"bundle:{changed}", device="cpu")


def test_member_paths_must_stay_inside(ensemble_dir: Path, tmp_path: Path) -> None:
    escaped = tmp_path / "escaped"
    shutil.copytree(ensemble_dir, escaped)
    meta = json.loads((escaped / "bundle.json").read_text())
    meta["members"][1]["path"] = "../../elsewhere"
    (escaped / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="bad member"):
        load_ensemble(escaped)
    meta["members"] = meta["members"][:1]
    (escaped / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="at least two"):
        load_ensemble(escaped)


def test_cli_refuses_bad_ensembles(
    members: list[Path], ensemble_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = (str(m) for m in members)
    cases = {
        "one member": ["--member", a],
        "missing member": ["--member", a, "--member", str(tmp_path / "nope")],
        "same member twice": ["--member", a, "--member", a],
        "nested ensemble": ["--member", a, "--member", str(ensemble_dir)],
        "not a bundle": ["--member", a, "--member", str(tmp_path)],
    }
    for case, args in cases.items():
        out = tmp_path / case.replace(" ", "-")
        assert main(["ensemble", *args, "--out", str(out)]) == 2, case
        assert not (out / "bundle.json").exists(), case
    assert main(["ensemble", "--member", a, "--member", b, "--out", str(ensemble_dir)]) == 2
    err = capsys.readouterr().err
    assert "already holds a bundle" in err and "Traceback" not in err


def test_a_failed_copy_leaves_nothing_behind(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A dangling link makes copytree fail after it has copied the rest of the member:
    # a real mid-copy fault, without faking the file system.
    broken = tmp_path / "broken"
    shutil.copytree(members[1], broken)
    (broken / "stray-link").symlink_to(tmp_path / "gone")
    out = tmp_path / "e"
    args = ["ensemble", "--member", str(members[0]), "--member"]
    assert main([*args, str(broken), "--out", str(out)]) == 1
    assert "cannot copy the members" in capsys.readouterr().err
    assert not out.exists()
    (broken / "stray-link").unlink()
    assert main([*args, str(broken), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["bundle.json", "members"]
