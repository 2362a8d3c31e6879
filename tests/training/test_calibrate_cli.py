"""``mmsearch calibrate`` end to end on a tiny bundle and twelve kfood recipes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.bundle import load_bundle
from service.cli import main
from tests.bundles import save_tiny_base, train_args

pytestmark = pytest.mark.slow  # trains a tiny bundle, then embeds the sample photos


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calibrate")
    out = root / "bundle"
    assert main(train_args(save_tiny_base(root), out, "--epochs", "2")) == 0
    return out


def test_calibrate_stores_curves_and_writes_the_report(
    bundle: Path, kfood_sample: Path, tmp_path: Path
) -> None:
    fingerprint = load_bundle(bundle).fingerprint
    report_path = tmp_path / "trust.json"
    args = ["calibrate", "--model", str(bundle), "--dataset", "kfood"]
    args += ["--data-dir", str(kfood_sample), "--val-fraction", "0.5", "--json", str(report_path)]
    assert main(args) == 0
    report = json.loads(report_path.read_text())
    figures = report["directions"]["kfood:image->recipe"]
    assert 0.0 <= figures["ece_top10"] <= 1.0
    assert figures["hubness_top3"]["candidates"] == figures["candidates"]
    assert "kfood:image->recipe" in report["hubness_correction"]
    loaded = load_bundle(bundle)
    assert loaded.fingerprint == fingerprint
    assert loaded.calibration is not None
    assert loaded.calibration.curve("image", "recipe").a > 0


def test_calibrate_refuses_unknown_datasets_and_unpaired_dirs(
    bundle: Path, kfood_sample: Path
) -> None:
    base = ["calibrate", "--model", str(bundle)]
    assert main([*base, "--dataset", "imagenet", "--data-dir", str(kfood_sample)]) == 2
    assert main([*base, "--dataset", "kfood", "--dataset", "flickr", "--data-dir", "x"]) == 2
