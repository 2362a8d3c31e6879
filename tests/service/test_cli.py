"""``mmsearch`` run in-process through ``main(argv)``, on the kfood sample."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from index.layout import read_current
from service.cli import main


@pytest.fixture(scope="module")
def indexed(kfood_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``mmsearch index`` run once for the module: the index directory and what it printed."""
    index_dir = tmp_path_factory.mktemp("cli-index")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(
            ["index", str(kfood_sample), "--format", "kfood", "--index-dir", str(index_dir)]
        )
    assert code == 0
    return index_dir, printed.getvalue()


@pytest.fixture()
def cli_index(indexed: tuple[Path, str]) -> Path:
    return indexed[0]


def first_photo(kfood_sample: Path) -> tuple[str, Path]:
    recipe = json.loads(
        (kfood_sample / "recipes.jsonl").read_text(encoding="utf-8").splitlines()[0]
    )
    return recipe["id"], kfood_sample / recipe["image"]


def test_index_publishes_and_prints_the_snapshot(indexed: tuple[Path, str]) -> None:
    index_dir, printed = indexed
    version = read_current(index_dir)
    assert version is not None
    assert (index_dir / version / "manifest.json").is_file()
    assert f"published snapshot {version}" in printed
    assert "items    12 (0 skipped)" in printed
    assert "image: 12" in printed and "recipe: 12" in printed
    assert "index    Flat," in printed  # --factory defaults to auto: 24 vectors are exact
    assert "recall   exact search" in printed
    assert "changes  embedded 12 items" in printed and "reused 0 items" in printed


def test_index_again_reuses_the_unchanged_items(
    indexed: tuple[Path, str], kfood_sample: Path, tmp_path: Path
) -> None:
    index_dir = tmp_path / "index"
    shutil.copytree(indexed[0], index_dir)  # the module's index stays as it was
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        argv = ["index", str(kfood_sample), "--format", "kfood", "--index-dir", str(index_dir)]
        assert main(argv) == 0
    assert "changes  embedded 0 items (0 vectors), reused 12 items" in printed.getvalue()
    assert "removed 0 items" in printed.getvalue()


def test_search_by_image_returns_json_with_its_own_item_first(
    cli_index: Path, kfood_sample: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    item_id, photo = first_photo(kfood_sample)
    capsys.readouterr()
    args = ["search", "--index-dir", str(cli_index), "--image", str(photo)]
    code = main([*args, "-k", "3", "--kinds", "image,recipe", "--json"])

    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["index_version"] == read_current(cli_index)
    assert len(result["matches"]) == 3
    top = result["matches"][0]
    assert top["id"] == item_id and top["rank"] == 1 and top["kind"] == "image"


def test_search_by_text_prints_a_table(cli_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["search", "--index-dir", str(cli_index), "--text", "김치찌개", "-k", "2"])

    assert code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"index version {read_current(cli_index)}"
    assert len(out) == 2 + 2  # version line, header, two matches


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["index", "{sample}", "--format", "nope", "--index-dir", "{tmp}"], 2, "unknown format"),
        (
            ["index", "{tmp}/missing", "--format", "kfood", "--index-dir", "{tmp}"],
            2,
            "does not exist",
        ),
        (["search", "--index-dir", "{tmp}/empty", "--text", "soup"], 1, "no index snapshot"),
        (["search", "--index-dir", "{tmp}", "--json"], 2, "exactly one of --text or --image"),
        (["search", "--index-dir", "{tmp}", "--image", "{tmp}/none.jpg"], 1, "not found"),
        (["index", "{sample}", "--index-dir", "{tmp}"], 2, "--format"),
        (
            [
                "eval",
                "--model",
                "offline",
                "--dataset",
                "kfood",
                "--data-dir",
                "{sample}",
                "--text-weight",
                "0.5",
            ],
            2,
            "food101 only",
        ),
        (
            [
                "eval",
                "--model",
                "offline",
                "--dataset",
                "food101",
                "--data-dir",
                "{sample}",
                "--text-weight",
                "1.5",
            ],
            2,
            "--text-weight must be in [0, 1]",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_a_message_and_no_traceback(
    args: list[str],
    code: int,
    message: str,
    kfood_sample: Path,
    cli_index: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = [a.format(sample=kfood_sample, tmp=tmp_path) for a in args]
    if "--image" in argv:  # needs a snapshot to get as far as reading the image
        argv[argv.index("--index-dir") + 1] = str(cli_index)
    capsys.readouterr()

    assert main(argv) == code

    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve", "worker", "index", "search"):
        assert command in out
