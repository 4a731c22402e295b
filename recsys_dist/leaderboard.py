"""The leaderboard of `recsys-dist compare`: from the runs' folders to leaderboard.md and a self-contained
leaderboard.html (inline CSS and SVG, nothing fetched, no script).

Per entry, over its finished seeds (mean +- sample std): the validation metric of the chosen checkpoint, test
AUC / logloss, the epoch of the best validation, samples/s; and dense parameters, embedding parameters and the
tables' weight memory (recsys_dist/model_size.py); the exact command of every run. Validation curves (val AUC and
logloss against epochs, every seed thin, the seeds' mean bold) are SVG polylines.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from recsys_dist.json_file import write_atomic, write_json

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf")
RunSpec = Tuple[str, int, Path, str]  # entry label, seed, run folder, command


def read_result(folder: Path) -> Tuple[Optional[Dict[str, Any]], str]:
    """(a run's result.json, "") if it is finished, else (None, why not): no result.json, or one that is not a whole
    JSON object (cut by a kill mid-write before train wrote it atomically, or by a full disk)."""
    path = folder / "result.json"
    if not path.is_file():
        return None, f"no {path}"
    try:
        doc = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as e:
        return None, f"{path}:{e.lineno}: not valid JSON ({e.msg}; cut short?)"
    if not isinstance(doc, dict):
        return None, f"{path}: expected a JSON object, got {type(doc).__name__}"
    return doc, ""


def _read_run(folder: Path) -> Dict[str, Any]:
    """The run's result and val curve. A metrics.jsonl line that is not a whole val record (a run killed mid-write
    leaves its last line cut; a full disk or an edit can leave one anywhere) is left out of the curve and named in
    the run's `notes`, so one damaged log does not stop the leaderboard of every other run."""
    run: Dict[str, Any] = {"result": read_result(folder)[0], "curve": [], "notes": []}
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return run
    bad = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("event") == "val":
                run["curve"].append((float(rec.get("epochs", rec["step"])), float(rec["auc"]),
                                     float(rec["logloss"])))
            elif not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
        except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
            bad.append((lineno, f"missing key {e}" if isinstance(e, KeyError) else str(e).split(":")[0]))
    if bad:
        lineno, why = bad[0]
        more = f" (and {len(bad) - 1} more line(s))" if len(bad) > 1 else ""
        run["notes"].append(f"{path}:{lineno}: not a metrics record ({why}; cut short?), left out of the curve{more}")
    return run


def _stats(values: Sequence[Optional[float]]) -> Optional[Tuple[float, float, int]]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return None
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


def _pm(s: Optional[Tuple[float, float, int]], spec: str = ".4f") -> str:
    """mean ± std, or the one value of a single seed (its std is not 0 but unknown)."""
    if s is None:
        return "-"
    return f"{s[0]:{spec}}" if s[2] == 1 else f"{s[0]:{spec}} ± {s[1]:{spec}}"


def _bytes(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def collect(out: Path, runs: Sequence[RunSpec]) -> List[Dict[str, Any]]:
    """One row per entry (in the given order; the caller ranks), with its runs."""
    rows: Dict[str, Dict[str, Any]] = {}
    for label, seed, folder, command in runs:
        cfg = yaml.safe_load((out / label / "config.yaml").read_text())
        row = rows.setdefault(label, {"entry": label, "arch": cfg["model"]["arch"], "runs": [],
                                      "metric": cfg["train"]["early_stopping"]["metric"]})
        row["runs"].append({"seed": seed, "folder": str(folder), "command": command, **_read_run(folder)})
    for row in rows.values():
        done = [r["result"] for r in row["runs"] if r["result"] is not None]
        metric = row["metric"]
        row["done"] = len(done)
        row["val"] = _stats([(r.get("best") or {}).get("value", (r.get("val") or {}).get(metric)) for r in done])
        row["test_auc"] = _stats([(r.get("test") or {}).get("auc") for r in done])
        row["test_logloss"] = _stats([(r.get("test") or {}).get("logloss") for r in done])
        row["best_epochs"] = _stats([(r.get("best") or {}).get("epochs") for r in done])
        row["samples_per_s"] = _stats([r.get("samples_per_s") for r in done])
        size = next((r["model_size"] for r in done if "model_size" in r), {})
        row["dense_parameters"] = size.get("dense_parameters")
        row["embedding_parameters"] = size.get("embedding_parameters")
        row["embedding_bytes"] = size.get("embedding_bytes")
    maximize = {"auc": True, "logloss": False}
    return sorted(rows.values(), key=lambda r: (r["val"] is None,
                                                 -(r["val"][0]) if r["val"] and maximize.get(r["metric"], True)
                                                 else (r["val"][0] if r["val"] else 0.0)))


def _cells(i: int, row: Dict[str, Any]) -> List[str]:
    n = len(row["runs"])
    sps = row["samples_per_s"]
    epochs = row["best_epochs"]
    return [str(i), row["entry"], row["arch"], _pm(row["val"]), _pm(row["test_auc"]), _pm(row["test_logloss"]),
            _pm(epochs, ".2f"),
            "-" if row["dense_parameters"] is None else f"{row['dense_parameters']:,}",
            "-" if row["embedding_parameters"] is None else f"{row['embedding_parameters']:,}",
            _bytes(row["embedding_bytes"]), _pm(sps, ",.0f"),
            f"{row['done']}/{n}"]


HEADER = ["#", "entry", "arch", "val (chosen)", "test AUC", "test logloss", "best epoch", "dense params",
          "embedding params", "embedding memory", "samples/s", "seeds"]


def _intro(rows: List[Dict[str, Any]]) -> str:
    metric = rows[0]["metric"] if rows else "auc"
    return (f"{len(rows)} entries, mean ± std over seeds (sample std). Ranked by the validation {metric} of each "
            "run's chosen checkpoint (train.keep_best); the test metrics are those of that checkpoint, reported, "
            "never used to rank. `best epoch`: epochs trained at the best validation. Embedding memory: table "
            "weights, without optimizer state.")


def render_markdown(out: Path, rows: List[Dict[str, Any]]) -> str:
    lines = [f"# Leaderboard: {out}", "", _intro(rows), "",
             "| " + " | ".join(HEADER + ["command (seed 0)"]) + " |", "|" + "---|" * (len(HEADER) + 1)]
    for i, row in enumerate(rows, 1):
        lines.append("| " + " | ".join(_cells(i, row) + [f"`{row['runs'][0]['command']}`"]) + " |")
    lines += ["", "## Every run", ""]
    for row in rows:
        for r in row["runs"]:
            state = "done" if r["result"] is not None else "NOT FINISHED (failed or interrupted; see train.log)"
            lines.append(f"- {row['entry']} seed {r['seed']} ({state}): `{r['command']}`")
            lines += [f"  - {note}" for note in r["notes"]]
    return "\n".join(lines) + "\n"


def _svg(rows: List[Dict[str, Any]], key: int, title: str, width: int = 640, height: int = 300) -> str:
    """Val curves: x = epochs, y = curve column `key` (1 auc, 2 logloss); thin per seed, bold the mean."""
    series = []
    for c, row in enumerate(rows):
        curves = [[(p[0], p[key]) for p in r["curve"] if not math.isnan(p[key])] for r in row["runs"]]
        curves = [cv for cv in curves if cv]
        longest = max((len(cv) for cv in curves), default=0)
        mean = [(statistics.fmean(cv[i][0] for cv in curves if len(cv) > i),
                 statistics.fmean(cv[i][1] for cv in curves if len(cv) > i)) for i in range(longest)]
        series.append((row["entry"], COLORS[c % len(COLORS)], curves, mean))
    pts = [p for _, _, curves, _ in series for cv in curves for p in cv]
    if not pts:
        return f"<p>{html.escape(title)}: no validation records.</p>"
    x0, x1 = 0.0, max(p[0] for p in pts) or 1.0
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    pad = (y1 - y0) * 0.08 or 0.01
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 60, 150, 28, 36
    W, H = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * W

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * H

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}">',
           f'<text x="{left}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
           f'<rect x="{left}" y="{top}" width="{W}" height="{H}" fill="none" stroke="#999"/>']
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        xv = x0 + (x1 - x0) * i / 4
        out.append(f'<line x1="{left}" x2="{left + W}" y1="{sy(yv):.1f}" y2="{sy(yv):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{sy(yv) + 4:.1f}" font-size="10" text-anchor="end">{yv:.4f}</text>')
        out.append(f'<text x="{sx(xv):.1f}" y="{top + H + 14}" font-size="10" text-anchor="middle">{xv:.2g}</text>')
    out.append(f'<text x="{left + W / 2}" y="{height - 4}" font-size="11" text-anchor="middle">epochs</text>')
    for k, (name, color, curves, mean) in enumerate(series):
        for cv in curves:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in cv)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1" opacity="0.35"/>')
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in mean)
        out.append(f'<polyline class="mean" data-entry="{html.escape(name)}" points="{path}" fill="none" '
                   f'stroke="{color}" stroke-width="2.5"/>')
        for x, y in mean:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>')
        ly = top + 12 + 16 * k
        out.append(f'<line x1="{left + W + 10}" x2="{left + W + 28}" y1="{ly - 4}" y2="{ly - 4}" stroke="{color}" '
                   f'stroke-width="2.5"/><text x="{left + W + 32}" y="{ly}" font-size="11">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(out: Path, rows: List[Dict[str, Any]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADER + ["command (seed 0)"])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in _cells(i, row))
                   + f"<td><code>{esc(row['runs'][0]['command'])}</code></td></tr>" for i, row in enumerate(rows, 1))
    unfinished = "<b>not finished</b>: failed or interrupted, see train.log"
    runs = "".join(f"<li>{esc(row['entry'])} seed {r['seed']} ({'done' if r['result'] is not None else unfinished})"
                   f": <code>{esc(r['command'])}</code>" + "".join(f"<br>{esc(n)}" for n in r["notes"]) + "</li>"
                   for row in rows for r in row["runs"])
    style = ("body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:nth-child(2),td:nth-child(3),"
             "td:last-child{text-align:left}th{background:#f3f3f3}code{font-size:12px}li{margin:2px 0}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Leaderboard</title>"
            f"<style>{style}</style></head><body>\n<h1>Leaderboard: {esc(str(out))}</h1>\n"
            f"<p>{esc(_intro(rows))}</p>\n<table><tr>{head}</tr>{body}</table>\n"
            f"<h2>Validation curves</h2>\n{_svg(rows, 1, 'val AUC')}\n{_svg(rows, 2, 'val logloss')}\n"
            f"<h2>Every run</h2><ul>{runs}</ul>\n</body></html>\n")


def write_leaderboard(out: Path, runs: Sequence[RunSpec]) -> Tuple[Path, Path]:
    rows = collect(out, runs)
    md, page = out / "leaderboard.md", out / "leaderboard.html"
    write_atomic(md, render_markdown(out, rows))
    write_atomic(page, render_html(out, rows))
    write_json(out / "leaderboard.json",
               [{k: v for k, v in r.items() if k != "runs"} | {"runs": [{k: v for k, v in x.items() if k != "curve"}
                                                                          for x in r["runs"]]} for r in rows], indent=1)
    return md, page
