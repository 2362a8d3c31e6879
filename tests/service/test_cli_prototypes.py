"""``mmsearch index`` prototype options: class field, K, zero-shot class files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from index.snapshot import load_current
from service.cli import main


@pytest.mark.slow
def test_index_builds_prototypes_from_a_metadata_field(
    kfood_sample: Path, tmp_path: Path, kfood_records: list[dict]
) -> None:
    zero_shot = tmp_path / "extra.json"
    zero_shot.write_text(json.dumps({"궁중요리": "임금님 수라상"}, ensure_ascii=False))
    args = ["index", str(kfood_sample), "--format", "kfood", "--index-dir", str(tmp_path / "ix")]
    args += ["--class-field", "level", "--shots", "2", "--zero-shot-classes", str(zero_shot)]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0

    table = load_current(tmp_path / "ix").prototypes
    levels = {record["level"] for record in kfood_records}
    assert {info.name for info in table.classes} == levels | {"궁중요리"}
    assert all(info.support == min(2, info.members) for info in table.classes)
    assert table.options.class_field == "level"
    assert f"classes  {len(levels) + 1} (1 zero-shot)" in printed.getvalue()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--class-field", "1st"], "class field"),
        (["--shots", "0"], "shots"),
        (["--text-weight", "2"], "text weight"),
        (["--zero-shot-classes", "{tmp}/missing.json"], "missing.json"),
        (["--zero-shot-classes", "{tmp}/bad.json"], "expected a list of class names"),
    ],
)
def test_bad_prototype_options_exit_2_before_encoding(
    extra: list[str],
    message: str,
    kfood_sample: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "bad.json").write_text('{"a": 1}')
    args = ["index", str(kfood_sample), "--format", "kfood", "--index-dir", str(tmp_path / "ix")]

    assert main(args + [value.format(tmp=tmp_path) for value in extra]) == 2

    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "ix").exists()  # refused before anything was built
