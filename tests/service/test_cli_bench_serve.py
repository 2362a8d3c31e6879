"""``mmsearch bench serve`` on a tiny catalog: a real server over HTTP, raw FAISS, recall.

The server is the real ``mmsearch serve`` with the tiny encoder in place of the model
(tests.e2e.tiny_mmsearch), so it starts in seconds; the benchmark does not encode.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.cli import main

pytestmark = pytest.mark.e2e
CHECKOUT = Path(__file__).resolve().parents[2]


def test_bench_serve_writes_service_raw_and_recall(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "serve.json"
    args = ["bench", "serve", "--sizes", "500", "--factories", "Flat", "--concurrency", "1"]
    args += ["--seconds", "0.5", "--dim", "32", "--base-port", "18791", "--json", str(out)]
    args += ["--code", f"service={CHECKOUT}", "--code", f"b64:base64:h11={CHECKOUT}"]
    code = main([*args, "--server-module", "tests.e2e.tiny_mmsearch"])

    assert code == 0
    (row,) = json.loads(out.read_text(encoding="utf-8"))
    assert (row["size"], row["factory"], row["c"]) == (500, "Flat", 1)
    # Flat is exact: the service over HTTP must find exactly what exact search finds,
    # sent a JSON float list or base64 float32 alike, on either HTTP stack.
    assert row["recall_at_10"] == {"raw": 1.0, "service": 1.0, "b64": 1.0}
    cells = [row["raw"], row["service"], row["b64"], *row["ceiling"].values()]
    assert len(cells) == 5
    for cell in cells:
        assert cell["qps"] > 0
        assert 0 < cell["p50_ms"] <= cell["p99_ms"]
    assert "chroma" not in row  # no peer unless --chroma-python
    printed = capsys.readouterr().out
    assert "| 500 | Flat | 1 | 1.0 |" in printed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--code", "nolabel"], "--code takes LABEL[:ENCODING[:HTTP]]=DIR"),
        (["--code", "x:hex=."], "--code x: the encoding is one of json, base64"),
        (["--code", "x:json:h2=."], "--code x: the HTTP stack is one of"),
        (["--code", "raw=."], "names a column"),
        (["--sizes", "0"], "--sizes must be at least 10"),
        (["--vector-encoding", "hex"], "--vector-encoding is one of json, base64"),
        (["--code", "a=.", "--code-env", "a"], "--code-env takes LABEL:NAME=VALUE"),
        (["--code", "a=.", "--code-env", "b:X=1"], "no --code labelled 'b'"),
    ],
)
def test_bench_serve_rejects_bad_options(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "serve", *args]) == 2
    assert message in capsys.readouterr().err


def test_plot_without_matplotlib_exits_before_measuring(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    # matplotlib is an optional extra: absent here whether or not this venv has it.
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "matplotlib" else find_spec(name)
    )
    assert main(["bench", "serve", "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot needs matplotlib" in capsys.readouterr().err


def test_code_env_reaches_only_its_own_server(tmp_path: Path) -> None:
    from service.benchmarks.load import Code, ServerSpec, start_server
    from service.commands.benchmarking import with_code_env

    codes = with_code_env(
        [Code("one", CHECKOUT), Code("two", CHECKOUT)],
        ["two:MMSEARCH_WORKERS=2", "two:MMSEARCH_INLINE_SEARCH_MS=0"],
    )
    assert [code.env for code in codes] == [
        (),
        (("MMSEARCH_WORKERS", "2"), ("MMSEARCH_INLINE_SEARCH_MS", "0")),
    ]
    # The module prints its environment: --code-env overrides the bench's --workers.
    spec = ServerSpec(model="offline", workers=1, module="tests.service.print_env")
    seen = []
    for code in codes:
        server = start_server(code, tmp_path, 0, spec)
        server.process.wait(timeout=60)
        seen.append(json.loads((tmp_path / "env.json").read_text(encoding="utf-8")))
    assert [env["MMSEARCH_WORKERS"] for env in seen] == ["1", "2"]
    assert "MMSEARCH_INLINE_SEARCH_MS" not in seen[0]
    assert seen[1]["MMSEARCH_INLINE_SEARCH_MS"] == "0"
