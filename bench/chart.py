"""Draw the latest benchmark results against their targets as an SVG.

Reads ``bench/results/{publish,fanout,connections,delivery,history}.json`` (written by the benchmarks)
and writes ``docs/img/benchmarks.svg``: one bar per target, its length the
measured figure as a multiple of the target (1.0 = exactly on target; for
latencies and durations, target ÷ figure, so longer is always better).

Run:  .venv/bin/python bench/chart.py   (after `make bench`)
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "docs" / "img" / "benchmarks.svg"


def _load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def rows() -> list[tuple[str, str, float]]:
    """(label, figure as text, score = figure relative to target, higher is better)."""
    out: list[tuple[str, str, float]] = []
    pub = _load("publish").get("cases", {})
    if "baseline" in pub and "single" in pub:
        ratio = pub["single"]["req_per_s"] / pub["baseline"]["req_per_s"]
        out.append(("single publish vs bare hypercorn (≥ 0.70×)", f"{ratio:.2f}×", ratio / 0.70))
    if "batch" in pub:
        eps = pub["batch"]["events_per_s"]
        out.append(("batch publish (≥ 20,000 events/s)", f"{eps:,.0f}/s", eps / 20000))
    fan = _load("fanout")
    if "fanout" in fan:
        p99 = fan["fanout"]["latency"]["p99_ms"]
        out.append(("publish→WebSocket p99, 20k frames/s (≤ 50 ms)", f"{p99:.1f} ms", 50 / p99))
    if "replay" in fan:
        ws = fan["replay"]["websocket"]
        secs = ws.get("median_seconds")
        if isinstance(secs, (int, float)) and secs > 0:
            out.append(("replay 10,000 missed events (≤ 2 s)", f"{secs:.2f} s", 2 / secs))
    spread = fan.get("spread", {})
    if spread.get("latency"):
        p99 = spread["latency"]["p99_ms"]
        label = "publish→WS p99, 2,000 subscribers (≤ 100 ms)"
        out.append((label, f"{p99:.1f} ms", 100 / p99))
        fps = spread.get("delivered_frames_per_s", 0)
        out.append(("frames/s with 2,000 subscribers (≥ 20,000)", f"{fps:,.0f}/s", fps / 20000))
    for run in _load("connections").get("runs", []):
        kb = run.get("rss_per_conn_kb")
        if kb:
            label = f"RSS per idle {run['kind']} stream, 10k streams (≤ 40 KB)"
            out.append((label, f"{kb:.1f} KB", 40 / kb))
    deliv = _load("delivery").get("cases", {}).get("publish_cost", {})
    base = deliv.get("no_channels", {}).get("req_per_s")
    for phase in deliv.get("phases", []):
        ratio = phase.get("ratio")
        if base and ratio is not None:
            label = f"publish, {phase['deliveries_per_event']} deliveries/event (≥ 0.90×)"
            out.append((label, f"{ratio:.2f}×", ratio / 0.90))
    return out


def svg(data: list[tuple[str, str, float]]) -> str:
    width, left, bar_w, row_h, top = 900, 360, 420, 34, 50
    height = top + row_h * len(data) + 40
    scale = bar_w / 2.0  # the bar area spans 0–2× the target
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        '<text x="20" y="28" font-size="16" font-weight="bold">notifyd benchmarks: '
        "measured ÷ target (right of the line = target met)</text>",
    ]
    for i, (label, figure, score) in enumerate(data):
        y = top + i * row_h
        length = min(score, 2.0) * scale
        color = "#2e7d32" if score >= 1 else "#c62828"
        parts.append(f'<text x="{left - 10}" y="{y + 20}" text-anchor="end">{escape(label)}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 6}" width="{length:.1f}" height="20" fill="{color}"/>'
        )
        more = " ▸" if score > 2 else ""
        parts.append(
            f'<text x="{left + length + 6:.1f}" y="{y + 20}">{escape(figure)}{more}</text>'
        )
    line_x = left + scale
    parts.append(
        f'<line x1="{line_x}" y1="{top}" x2="{line_x}" y2="{top + row_h * len(data)}" '
        'stroke="#333" stroke-dasharray="4,3"/>'
    )
    parts.append(f'<text x="{line_x}" y="{height - 14}" text-anchor="middle">target</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    data = rows()
    if not data:
        raise SystemExit("no results in bench/results/: run `make bench` first")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(svg(data))
    for label, figure, score in data:
        print(f"{label:55s} {figure:>12s}  {'met' if score >= 1 else 'MISSED'}")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
