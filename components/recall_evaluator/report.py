"""A self-contained HTML report of one evaluation (charts embedded as PNG data URIs)."""
from __future__ import annotations

import base64
import html
import io
import os
from typing import Any, Dict, List

import matplotlib

from core.features import OVERALL

matplotlib.use("Agg")   # no display: render to files
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"candidate": "#1f77b4", "baseline": "#ff7f0e", "pixels": "#9a9a9a"}


def _scopes(metrics: Dict[str, Any]) -> List[str]:
    candidate = metrics["candidate"]
    return [OVERALL] + sorted(s for s in candidate if s != OVERALL)


def recall_bar_chart(metrics: Dict[str, Any]) -> bytes:
    """Recall@1 per group: candidate, baseline model and raw pixels, with each group's bar."""
    scopes = _scopes(metrics)
    rows = [("candidate", metrics["candidate"]), ("baseline", metrics.get("baseline")),
            ("pixels", metrics.get("pixel_baseline"))]
    rows = [(name, values) for name, values in rows if values]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(scopes)), 4.0), dpi=100)
    for i, (name, values) in enumerate(rows):
        heights = [(values.get(s) or {}).get("recall@1") or 0.0 for s in scopes]
        positions = [x + (i - (len(rows) - 1) / 2) * width for x in range(len(scopes))]
        ax.bar(positions, heights, width, label=name, color=COLOURS[name])
    for x, scope in enumerate(scopes):
        bar = metrics["thresholds"].get(scope)
        if bar is not None:
            ax.hlines(bar, x - 0.45, x + 0.45, colors="#d62728", linestyles="--",
                      label="bar" if x == 0 else None)
    ax.set_xticks(range(len(scopes)), scopes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Recall@1")
    ax.set_title("Recall@1 per group")
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def recall_curve_chart(metrics: Dict[str, Any]) -> bytes:
    """Recall@K against K for every group (candidate solid, baseline dashed)."""
    curves = metrics["curves"]
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for scope in _scopes(metrics):
        points = curves["candidate"].get(scope, {})
        ks = sorted(int(k) for k in points)
        line, = ax.plot(ks, [points[str(k)] for k in ks], marker="o", label=scope)
        baseline = curves.get("baseline", {}).get(scope)
        if baseline:
            ax.plot(ks, [baseline.get(str(k)) for k in ks], linestyle="--",
                    color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_ylim(0, 1.05)
    ax.set_title("Recall@K (dashed: baseline model)")
    ax.legend(fontsize=8)
    return _png(fig)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value, signed=False) -> str:
    if value is None:
        return "&ndash;"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def render_html(metrics: Dict[str, Any], charts: Dict[str, bytes]) -> str:
    blessed = metrics["blessed"]
    ks = metrics["gate_config"]["ks"]
    e = html.escape
    rows = []
    for scope in _scopes(metrics):
        candidate = metrics["candidate"][scope]
        baseline = (metrics.get("baseline") or {}).get(scope, {})
        pixels = (metrics.get("pixel_baseline") or {}).get(scope, {})
        cells = [f"<td>{e(scope)}</td>", f"<td>{candidate['n_queries']}</td>",
                 f"<td>{candidate['n_skipped']}</td>"]
        for k in ks:
            key = f"recall@{k}"
            cells.append(f"<td>{_fmt(candidate.get(key))}</td>")
        cells += [f"<td>{_fmt(baseline.get('recall@1'))}</td>",
                  f"<td>{_fmt(metrics['deltas'].get(scope, {}).get('recall@1'), True)}</td>",
                  f"<td>{_fmt(pixels.get('recall@1'))}</td>",
                  f"<td>{_fmt(metrics['thresholds'].get(scope))}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    rules = "".join(
        f"<tr class='{'pass' if r['passed'] else 'fail'}'><td>{'PASS' if r['passed'] else 'FAIL'}"
        f"</td><td>{e(r['rule'])}</td><td>{e(r['scope'])}</td><td>{e(r['message'])}</td></tr>"
        for r in metrics["verdicts"])
    images = "".join(
        f"<figure><img alt='{e(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(data).decode()}'><figcaption>{e(name)}.png</figcaption></figure>"
        for name, data in charts.items())
    k_headers = "".join(f"<th>Recall@{k}</th>" for k in ks)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>FFEM-TFX evaluation</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.verdict {{ font-size: 1.4em; padding: 0.5em 1em; display: inline-block; color: white; }}
.blessed {{ background: #2e7d32; }} .not-blessed {{ background: #c62828; }}
tr.fail td {{ background: #fdecea; }} tr.pass td:first-child {{ color: #2e7d32; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
</style></head><body>
<h1>Model evaluation</h1>
<p class="verdict {'blessed' if blessed else 'not-blessed'}">{'BLESSED' if blessed else
                                                              'NOT BLESSED'}</p>
<p>Candidate: <code>{e(metrics['model']['uri'])}</code> (artifact {metrics['model']['id']})<br>
Baseline: <code>{e((metrics.get('baseline_model') or {}).get('uri') or 'none (first model)')}</code><br>
Eval split: <code>{e(metrics['split'])}</code>, {metrics['candidate'][OVERALL]['n_queries']} queries</p>
<h2>Release rules</h2>
<table><tr><th>verdict</th><th>rule</th><th>scope</th><th>detail</th></tr>{rules}</table>
<h2>Recall per group</h2>
<table><tr><th>group</th><th>queries</th><th>skipped</th>{k_headers}<th>baseline R@1</th>
<th>&Delta; R@1</th><th>raw pixels R@1</th><th>bar</th></tr>{''.join(rows)}</table>
<p>Raw pixels: nearest neighbour by cosine on the normalized crops ({e(str(metrics.get(
        'pixel_baseline_resolution', 'n/a')))}), a sanity anchor the model must clearly beat.</p>
<h2>Charts</h2>{images}
</body></html>
"""


def write_report(metrics: Dict[str, Any], output_dir: str) -> Dict[str, str]:
    """Writes report.html and the chart PNGs; returns their paths."""
    import tensorflow as tf  # gfile: works for gs:// too

    charts = {"recall_at_1_by_group": recall_bar_chart(metrics),
              "recall_at_k": recall_curve_chart(metrics)}
    paths = {}
    for name, data in charts.items():
        paths[name] = os.path.join(output_dir, f"{name}.png")
        with tf.io.gfile.GFile(paths[name], "wb") as f:
            f.write(data)
    paths["report"] = os.path.join(output_dir, "report.html")
    with tf.io.gfile.GFile(paths["report"], "w") as f:
        f.write(render_html(metrics, charts))
    return paths
