"""Draw one trace as a waterfall SVG, from spans an OTLP receiver captured.

    python infra/trace_waterfall.py spans.json docs/trace-waterfall.svg

``spans.json`` is what tests/e2e/test_tracing.py writes (QUIRE_TRACE_SPANS_OUT=spans.json): a
list of spans with trace_id, span_id, parent_span_id, name, service, start_ns, end_ns and
attributes. The trace drawn is the one holding a ``job.create`` span (``--trace`` picks
another). Each span is a row, under its parent, in the order it started; its bar spans its start
and end on one time axis, coloured by the process (service) that recorded it. Plain SVG: no
dependency beyond the standard library.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

ROW = 22
LABEL_WIDTH = 360
BAR_WIDTH = 560
RIGHT = 70
TOP = 58
COLOURS = {"quire-api": "#3b7dd8", "quire-worker": "#e08a2c"}
OTHER_COLOUR = "#8a8a8a"


@dataclass
class Span:
    span_id: str
    parent_span_id: str
    name: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    children: list[Span] = field(default_factory=list)


def load(path: Path, trace_id: str | None) -> list[Span]:
    raw: list[dict[str, Any]] = json.loads(path.read_text())
    if trace_id is None:
        creates = [s for s in raw if s["name"] == "job.create"]
        if not creates:
            raise SystemExit(f"{path}: no job.create span; name the trace with --trace")
        trace_id = creates[0]["trace_id"]
    return [
        Span(
            s["span_id"],
            s["parent_span_id"],
            s["name"],
            s["service"],
            s["start_ns"],
            s["end_ns"],
            s["attributes"],
        )
        for s in raw
        if s["trace_id"] == trace_id
    ]


def in_tree_order(spans: list[Span]) -> list[tuple[int, Span]]:
    """(depth, span), each span after its parent and its earlier-started siblings."""
    by_id = {s.span_id: s for s in spans}
    roots = []
    for span in spans:
        parent = by_id.get(span.parent_span_id)
        if parent is None:
            roots.append(span)  # the root, or a span whose parent was not captured
        else:
            parent.children.append(span)
    ordered: list[tuple[int, Span]] = []

    def walk(span: Span, depth: int) -> None:
        ordered.append((depth, span))
        for child in sorted(span.children, key=lambda s: s.start_ns):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda s: s.start_ns):
        walk(root, 0)
    return ordered


def label(span: Span) -> str:
    """The span's name and what tells rows of one name apart: the file (the end of its id, as
    ids made at once share their start), the outcome, the number of files."""
    details = []
    if span.name.startswith(("file.", "job.", "webhook.")):
        attributes = span.attributes
        if "file_id" in attributes:
            details.append(f"…{str(attributes['file_id'])[-6:]}")
        if "outcome" in attributes:
            details.append(str(attributes["outcome"]))
        if "file_count" in attributes:
            details.append(f"{attributes['file_count']} files")
    return "  ".join([span.name, *details])


def seconds_label(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def tick_step(total: float) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300):
        if total / step <= 8:
            return step
    return total / 8


def draw(spans: list[Span], title: str) -> str:
    rows = in_tree_order(spans)
    start = min(s.start_ns for s in spans)
    total = max(max(s.end_ns for s in spans) - start, 1) / 1e9
    scale = BAR_WIDTH / total
    width = LABEL_WIDTH + BAR_WIDTH + RIGHT
    height = TOP + ROW * len(rows) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Arial, sans-serif" '
        'font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
    ]
    legend_x = 10
    for service in sorted({s.service for s in spans}):
        colour = COLOURS.get(service, OTHER_COLOUR)
        out.append(f'<rect x="{legend_x}" y="30" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{legend_x + 16}" y="40">{escape(service)}</text>')
        legend_x += 16 + 8 * len(service) + 20
    step = tick_step(total)
    tick = 0.0
    while tick <= total + 1e-9:
        x = LABEL_WIDTH + tick * scale
        out.append(
            f'<line x1="{x:.1f}" y1="{TOP - 6}" x2="{x:.1f}" y2="{TOP + ROW * len(rows)}" '
            'stroke="#e4e4e4"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{TOP + ROW * len(rows) + 16}" text-anchor="middle" '
            f'fill="#555">{seconds_label(tick)}</text>'
        )
        tick += step
    for index, (depth, span) in enumerate(rows):
        y = TOP + index * ROW
        if index % 2:
            out.append(f'<rect x="0" y="{y}" width="{width}" height="{ROW}" fill="#f6f6f6"/>')
        out.append(f'<text x="{10 + 14 * depth}" y="{y + 15}">{escape(label(span))}</text>')
        x = LABEL_WIDTH + (span.start_ns - start) / 1e9 * scale
        bar = max((span.end_ns - span.start_ns) / 1e9 * scale, 1.5)
        colour = COLOURS.get(span.service, OTHER_COLOUR)
        duration = (span.end_ns - span.start_ns) / 1e9
        out.append(
            f'<rect x="{x:.1f}" y="{y + 4}" width="{bar:.1f}" height="{ROW - 8}" '
            f'fill="{colour}" rx="2"><title>{escape(span.name)} '
            f"{seconds_label(duration)}</title></rect>"
        )
        out.append(
            f'<text x="{x + bar + 4:.1f}" y="{y + 15}" fill="#555" font-size="11">'
            f"{seconds_label(duration)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spans", type=Path, help="the spans, as JSON")
    parser.add_argument("svg", type=Path, help="where to write the picture")
    parser.add_argument("--trace", help="the trace id (default: the one with job.create)")
    parser.add_argument("--title", default="One job's trace: POST, ingest, conversions, archive")
    args = parser.parse_args()
    spans = load(args.spans, args.trace)
    args.svg.write_text(draw(spans, args.title))
    print(f"{args.svg}: {len(spans)} spans")


if __name__ == "__main__":
    main()
