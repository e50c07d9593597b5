"""Metadata builders shared by assets: previews, distributions and plots for the Dagster UI."""

from __future__ import annotations

import base64
import io

import dagster as dg
import pandas as pd


def table_preview(frame: pd.DataFrame, rows: int = 5, max_chars: int = 60) -> dg.MetadataValue:
    """The first rows as a markdown table, long text cut short."""
    head = frame.head(rows).copy()
    for column in head.columns:
        if head[column].dtype == object:
            head[column] = head[column].map(
                lambda v: v if not isinstance(v, str) or len(v) <= max_chars else v[:max_chars] + "…"
            )
    return dg.MetadataValue.md(head.to_markdown(index=False))


def counts_table(series: pd.Series, title: str, top: int = 15) -> dg.MetadataValue:
    """A markdown table of the most frequent values with their shares."""
    counts = series.value_counts().head(top)
    share = counts / len(series)
    lines = [f"| {title} | count | share |", "|---|---:|---:|"]
    lines += [f"| {k} | {v} | {s:.1%} |" for k, v, s in zip(counts.index, counts.to_numpy(), share.to_numpy())]
    return dg.MetadataValue.md("\n".join(lines))


def png_markdown(figure, alt: str = "plot") -> dg.MetadataValue:
    """A matplotlib figure embedded in markdown as a base64 PNG (the UI renders it)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{encoded})")
