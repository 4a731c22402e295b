"""A self-contained HTML page for one plan or two plans side by side: inline SVG charts, no scripts, no network.

Per rank: memory used (stacked by sharding type, against the capacity left after the reservation) and estimated
time per step (forward / backward, compute / comms) and communication volume; the tables list coloured by
sharding type; TorchRec's own planner statistics at the end.
"""

from __future__ import annotations

import html
from typing import Any, Dict, List, Sequence, Tuple

from embedding_sharding.report import _summary_lines, gib

COLORS = {
    "table_wise": "#4e79a7", "row_wise": "#f28e2b", "column_wise": "#59a14f", "table_row_wise": "#e15759",
    "table_column_wise": "#76b7b2", "data_parallel": "#b07aa1", "grid_shard": "#edc948",
}
TIME_PARTS = (("fwd_compute_ms", "fwd compute", "#4e79a7"), ("fwd_comms_ms", "fwd comms", "#a0cbe8"),
              ("bwd_compute_ms", "bwd compute", "#f28e2b"), ("bwd_comms_ms", "bwd comms", "#ffbe7d"))
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 12px} h2{font-size:17px;margin:22px 0 8px} h3{font-size:14px;margin:14px 0 6px}
.plans{display:flex;gap:28px;flex-wrap:wrap} .plan{flex:1;min-width:620px;background:#fff;padding:16px;
border:1px solid #ddd;border-radius:8px} ul.summary{padding-left:18px;font-size:13px;line-height:1.5}
.legend span{display:inline-block;margin-right:12px;font-size:12px} .sw{display:inline-block;width:11px;height:11px;
margin-right:4px;vertical-align:-1px;border-radius:2px} table{border-collapse:collapse;font-size:12px;width:100%}
th,td{padding:3px 6px;border-bottom:1px solid #eee;text-align:right} th:first-child,td:first-child{text-align:left}
.badge{color:#fff;border-radius:3px;padding:1px 5px;font-size:11px} .scroll{max-height:420px;overflow:auto}
pre{font-size:11px;background:#f4f4f4;padding:8px;overflow:auto;max-height:480px} svg text{font-size:10px;fill:#444}
"""


def _esc(s: Any) -> str:
    return html.escape(str(s))


def bar_chart(ranks: Sequence[Dict[str, Any]], parts: Sequence[Tuple[str, str, str]], unit: str, scale: float,
              limit: float = 0.0, limit_label: str = "", width: int = 640, height: int = 190) -> str:
    """Stacked bars, one per rank. parts: (key, label, colour); values are r[key] / scale; an optional dashed
    line at `limit` (same unit)."""
    n = len(ranks)
    left, bottom, top = 48, 22, 10
    plot_w, plot_h = width - left - 8, height - bottom - top
    totals = [sum(r.get(k, 0.0) for k, _, _ in parts) / scale for r in ranks]
    vmax = max(max(totals, default=0.0), limit, 1e-12) * 1.08
    bw = plot_w / max(n, 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i in range(5):  # grid and y labels
        v = vmax * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>')
        out.append(f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{v:.3g}</text>')
    out.append(f'<text x="4" y="{top + 8}">{_esc(unit)}</text>')
    for i, r in enumerate(ranks):
        x = left + i * bw
        y = top + plot_h
        for key, label, color in parts:
            v = r.get(key, 0.0) / scale
            if v <= 0:
                continue
            h = plot_h * v / vmax
            y -= h
            out.append(f'<rect x="{x + bw * 0.1:.2f}" y="{y:.2f}" width="{max(bw * 0.8, 0.5):.2f}" '
                       f'height="{h:.2f}" fill="{color}"><title>rank {r["rank"]}: {_esc(label)} '
                       f'{v:.4g} {_esc(unit)}</title></rect>')
        if n <= 32 or i % max(1, n // 16) == 0:
            out.append(f'<text x="{x + bw / 2:.1f}" y="{height - 8}" text-anchor="middle">{r["rank"]}</text>')
    if limit > 0:
        y = top + plot_h - plot_h * limit / vmax
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c00" '
                   f'stroke-dasharray="5,3"/><text x="{width - 10}" y="{y - 3:.1f}" text-anchor="end" '
                   f'style="fill:#c00">{_esc(limit_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _legend(items: Sequence[Tuple[str, str]]) -> str:
    return '<div class="legend">' + "".join(
        f'<span><i class="sw" style="background:{c}"></i>{_esc(label)}</span>' for label, c in items) + "</div>"


def plan_section(report: Dict[str, Any]) -> str:
    tp = report["topology"]
    cuda = tp["device"] == "cuda"
    tier = "HBM" if cuda else "DDR"
    cap_key, res_key = ("hbm_capacity", "hbm_reserved") if cuda else ("ddr_capacity", "ddr_reserved")
    ranks = report["ranks"]
    types = sorted({t["sharding_type"] for t in report["tables"]})
    mem_parts = [(f"mem:{t}", t, COLORS.get(t, "#999")) for t in types]
    mem_ranks = [{"rank": r["rank"], **{f"mem:{t}": r["bytes_by_sharding_type"].get(t, 0) for t in types}}
                 for r in ranks]
    limit = min(r[cap_key] - r[res_key] for r in ranks) / 2**30
    comm = [{"rank": r["rank"], "fwd": r["fwd_comm_bytes"], "bwd": r["bwd_comm_bytes"]} for r in ranks]
    parts = [f'<div class="plan"><h2>{_esc(report["title"] or "plan")}</h2><ul class="summary">']
    parts += [f"<li>{_esc(s)}</li>" for s in _summary_lines(report)]
    parts.append("</ul>")
    parts.append(f"<h3>{tier} used per rank (weights + optimizer state), by sharding type</h3>")
    parts.append(_legend([(t, COLORS.get(t, "#999")) for t in types]))
    parts.append(bar_chart(mem_ranks, mem_parts, "GiB", 2**30, limit, f"{limit:.1f} GiB usable"))
    parts.append("<h3>Estimated time per step per rank (TorchRec perf model)</h3>")
    parts.append(_legend([(label, c) for _, label, c in TIME_PARTS]))
    parts.append(bar_chart(ranks, TIME_PARTS, "ms", 1.0))
    parts.append("<h3>Communication sent per step per rank (estimate)</h3>")
    parts.append(_legend([("forward", "#59a14f"), ("backward", "#8cd17d")]))
    parts.append(bar_chart(comm, (("fwd", "forward", "#59a14f"), ("bwd", "backward", "#8cd17d")), "MiB", 2**20))
    parts.append("<h3>Tables</h3>" + _legend([(t, COLORS.get(t, "#999")) for t in types]))
    parts.append('<div class="scroll"><table><tr><th>table</th><th>rows</th><th>dim</th><th>sharding type</th>'
                 "<th>kernel</th><th>ranks</th><th>GiB</th></tr>")
    for t in report["tables"]:
        rk = t["ranks"]
        shown = ",".join(map(str, rk)) if len(rk) <= 6 else f"{rk[0]}..{rk[-1]} ({len(rk)})"
        color = COLORS.get(t["sharding_type"], "#999")
        parts.append(f'<tr><td>{_esc(t["name"])}</td><td>{t["rows"]:,}</td><td>{t["dim"]}</td>'
                     f'<td><span class="badge" style="background:{color}">{_esc(t["sharding_type"])}</span></td>'
                     f'<td>{_esc(t["compute_kernel"])}</td><td>{_esc(shown)}</td>'
                     f'<td>{gib(t["hbm_bytes"] + t["ddr_bytes"])}</td></tr>')
    parts.append("</table></div>")
    if report["torchrec_stats"]:
        parts.append("<details><summary>TorchRec planner statistics</summary><pre>"
                     f"{_esc(report['torchrec_stats'])}</pre></details>")
    parts.append("</div>")
    return "".join(parts)


def render_html(reports: List[Dict[str, Any]], title: str = "Sharding plan") -> str:
    body = "".join(plan_section(r) for r in reports)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>'
            f'<style>{CSS}</style></head><body><h1>{_esc(title)}</h1><div class="plans">{body}</div>'
            "</body></html>\n")
