"""Training configurations check themselves; the CLI names their fields as its flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.commands import CommandInputError
from service.commands.learning import training_configs
from training.errors import ConfigError
from training.tower_tuning import TuneConfig
from training.train import TrainConfig
from training.train_bundle import BundleRequest, Source

FOOD = (Source("food101", Path("food")),)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": 0}, "epochs must be at least 1 and batch_size at least 2"),
        ({"batch_size": 1}, "epochs must be at least 1 and batch_size at least 2"),
        ({"semantic_weight": -0.1}, "loss weights cannot be negative"),
        ({"infonce_weight": 0.0}, "infonce_weight and triplet_weight cannot both be 0"),
        ({"lr": 0.0}, "lr and temperature must be positive"),
    ],
)
def test_train_config_refuses_bad_options(options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig(**options)
    assert str(info.value) == message


def test_tune_config_and_bundle_request_refuse_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"split_stage must be one of \(4, 5, 6\)"):
        TuneConfig(split_stage=2)
    with pytest.raises(ConfigError, match="mixup cannot be negative"):
        TuneConfig(mixup=-0.5)
    with pytest.raises(ConfigError, match=r"val_fraction must be in \[0, 1\)"):
        BundleRequest(FOOD, Path("out"), val_fraction=1.0)
    with pytest.raises(ConfigError, match="metric: unknown metric 'manhattan'"):
        BundleRequest(FOOD, Path("out"), metric="manhattan")
    with pytest.raises(ConfigError, match="image_size works with base offline only"):
        BundleRequest(FOOD, Path("out"), base="openclip:x", image_size=256)
    flickr = (Source("flickr", Path("flickr")),)
    with pytest.raises(ConfigError, match="tune_tower needs a labelled dataset"):
        BundleRequest(flickr, Path("out"), tune_tower=TuneConfig())
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        Source("imagenet", None)
    assert BundleRequest(FOOD, Path("out"), tune_tower=TuneConfig()).tune_tower == TuneConfig()


@pytest.mark.parametrize(
    ("tune", "request_options", "config", "message"),
    [
        (None, {"val_fraction": 1.5}, {}, "--val-fraction must be in [0, 1)"),
        (None, {"metric": "manhattan"}, {}, "--metric: unknown metric 'manhattan'"),
        (None, {}, {"epochs": 0}, "--epochs must be at least 1 and --batch-size at least 2"),
        (
            None,
            {},
            {"infonce_weight": 0.0},
            "--infonce-weight and --triplet-weight cannot both be 0",
        ),
        ({"lr": 0.0}, {}, {}, "--tune-tower-lr must be positive"),
        ({"mixup": -1.0}, {}, {}, "--tune-tower-mixup cannot be negative"),
        ({"split_stage": 2}, {}, {}, "--tune-tower-from-stage must be one of (4, 5, 6)"),
        (
            {},
            {"base": "openclip:x"},
            {},
            "--tune-tower-epochs works with --base offline only",
        ),
        (None, {"image_tta": "rotate"}, {}, "--image-tta: image test-time augmentation"),
    ],
)
def test_the_cli_reports_config_errors_with_its_flags(
    tune: dict | None, request_options: dict, config: dict, message: str
) -> None:
    with pytest.raises(CommandInputError) as info:
        training_configs(FOOD, tune, {"out_dir": Path("out"), **request_options}, config)
    assert str(info.value).startswith(message)
