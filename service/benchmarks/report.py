"""The benchmark's rows as a Markdown table, as JSON and as a plot (QPS against recall)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.benchmarks.load import Cell

Row = dict[str, Any]


def table(rows: list[Row], labels: list[str]) -> str:
    """One line per (size, factory, concurrency): raw FAISS, then each server over HTTP."""
    head = "| size | index | c | recall@10 raw | raw QPS | raw p50 / p99 ms |"
    for lab in labels:
        head += f" {lab} recall@10 | {lab} QPS | {lab} p50 / p99 ms | {lab} / raw |"
        head += f" {lab} /healthz QPS |"
    lines = [head, "|" + "---|" * (6 + 5 * len(labels))]
    for row in rows:
        raw: Cell = row["raw"]
        recalls = row["recall_at_10"]
        line = f"| {row['size']:,} | {row['factory']} | {row['c']} | {recalls['raw']} |"
        line += f" {raw.qps:,.0f} | {raw.p50_ms:.2f} / {raw.p99_ms:.2f} |"
        for label in labels:
            cell: Cell = row[label]
            ceiling: Cell | None = row.get("ceiling", {}).get(label)
            line += f" {recalls[label]} | {cell.qps:,.0f} | {cell.p50_ms:.2f} / {cell.p99_ms:.2f} |"
            line += f" {cell.qps / raw.qps:.2f}× | {f'{ceiling.qps:,.0f}' if ceiling else '-'} |"
        lines.append(line)
    return "\n".join(lines)


def plain(value: Any) -> Any:
    """Cells as dicts, all the way down: what json.dumps takes."""
    if isinstance(value, Cell):
        return value.__dict__
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def write_json(rows: list[Row], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(plain(rows), indent=2), encoding="utf-8")


def plot(rows: list[Row], labels: list[str], out: Path) -> None:
    """QPS at concurrency 1 against recall@10, one panel per catalog size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({int(row["size"]) for row in rows})
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.2), squeeze=False)
    for axis, size in zip(axes[0], sizes, strict=True):
        lowest = _plot_size(axis, [r for r in rows if r["size"] == size], labels)
        axis.set(title=f"{size:,} vectors, concurrency 1", xlabel="recall@10", ylabel="QPS")
        axis.set_xlim(min(lowest, 0.9) - 0.01, 1.005)
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)


def _plot_size(axis: Any, rows: list[Row], labels: list[str]) -> float:
    """One panel's points; the lowest recall drawn, for the axis limit."""
    colours = {"raw": "tab:blue", **{lab: f"C{i + 1}" for i, lab in enumerate(labels)}}
    markers = {"Flat": "s", "HNSW32": "o"}
    lowest = 1.0
    for row in (r for r in rows if r["c"] == 1):
        for engine in ["raw", *labels]:
            cell: Cell = row[engine]
            name = "raw FAISS" if engine == "raw" else f"{engine} (HTTP)"
            recall = row["recall_at_10"][engine]
            axis.scatter(
                recall,
                cell.qps,
                color=colours[engine],
                marker=markers.get(str(row["factory"]), "D"),
                label=f"{name}, {row['factory']}",
            )
            lowest = min(lowest, recall)
    for peer in (r["chroma"] for r in rows if "chroma" in r):
        points = [(p["recall_at_10"], p["c1"]["qps"]) for p in peer["settings"]]
        axis.plot(*zip(*points, strict=True), "x--", color="grey", label="chromadb (HTTP)")
        lowest = min([lowest, *(recall for recall, _ in points)])
    return lowest
