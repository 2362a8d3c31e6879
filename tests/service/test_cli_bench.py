"""``mmsearch bench synthetic`` run in-process through ``main(argv)`` on a tiny budget."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from service.cli import main


@pytest.fixture()
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the benchmark sets it too; this also covers data generation
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def test_bench_synthetic_writes_json_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: None
) -> None:
    out = tmp_path / "bench" / "synthetic.json"
    args = ["bench", "synthetic", "--seeds", "1", "--k", "5", "--metric", "cosine"]
    code = main([*args, "--sample-budget", "120", "--no-progress", "--json", str(out)])

    assert code == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["seeds"] == [0]
    assert result["ks"] == [5]
    assert result["metrics"] == ["cosine"]
    assert result["training"]["sample_budget"] == 120
    assert {(row["model"], row["k"]) for row in result["rows"]} == {
        ("raw", None),
        ("cosine", 5),
    }
    assert len(result["rows"]) == 2 * 7  # every non-empty subset of three modalities
    for row in result["rows"]:
        for top in ("top1", "top5"):
            for column in ("known", "known_unknown", "all"):
                stat = row[top][column]
                assert 0.0 <= stat["mean"] <= 100.0
                assert stat["values"] == [stat["mean"]]
    raw_all = next(r for r in result["rows"] if r["model"] == "raw" and r["subset"] == [0, 1, 2])
    assert raw_all["top1"]["known"]["mean"] > 80.0  # the untrained baseline needs no training
    assert result["study"]["all_modalities"]["top1"]["known"] == 97.53

    printed = capsys.readouterr().out
    assert "Against the study (cosine training, K = 200)" in printed
    assert "97.53" in printed
    assert "cosine K=5 [0+1+2]" in printed


@pytest.mark.parametrize(
    "args",
    [
        ["--seeds", "0"],
        ["--metric", "manhattan"],
        ["--sample-budget", "0"],
        ["--additive-share", "1.5"],
    ],
)
def test_bench_synthetic_rejects_bad_input(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "synthetic", *args, "--no-progress"]) == 2
    assert "error: bench synthetic:" in capsys.readouterr().err
