"""A self-contained HTML report of one evaluation (charts embedded as PNG data URIs).

Unbounded figures show as "∞" (an interval may end there: a ratio whose smallest group has no
errors); a figure without an interval says "no interval" in the 1:1 tables. Advisories (gate.py:
what the 1:1 view shows while its rule is off) stand in a box above the rules."""
from __future__ import annotations

import base64
import html
import io
import math
import os
from typing import Any, Dict, List

import matplotlib

from core.features import OVERALL
from core.interval_quality import APPROXIMATE_MARK, mark, verdict_mark

matplotlib.use("Agg")   # no display: render to files
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"candidate": "#1f77b4", "baseline": "#ff7f0e", "pixels": "#9a9a9a"}


def _scopes(metrics: Dict[str, Any]) -> List[str]:
    candidate = metrics["candidate"]
    return [OVERALL] + sorted(s for s in candidate if s != OVERALL)


def _yerr(values: Dict[str, Any], scopes: List[str], key: str):
    """Asymmetric error bars [[below], [above]] from `<key>_ci` (0 where there is none)."""
    below, above = [], []
    for scope in scopes:
        entry = values.get(scope) or {}
        value, ci = entry.get(key), entry.get(f"{key}_ci")
        if value is None or not ci:
            below.append(0.0)
            above.append(0.0)
        else:
            below.append(max(0.0, value - ci[0]))
            above.append(max(0.0, ci[1] - value))
    return [below, above]


def recall_bar_chart(metrics: Dict[str, Any]) -> bytes:
    """Recall@1 per group with 95 % error bars, whole gallery and within group side by side:
    candidate, baseline model and raw pixels, with each group's bar."""
    scopes = _scopes(metrics)
    rows = [("candidate", metrics["candidate"]), ("baseline", metrics.get("baseline")),
            ("pixels", metrics.get("pixel_baseline"))]
    rows = [(name, values) for name, values in rows if values]
    width = 0.8 / len(rows)
    gated = metrics.get("gate_config", {}).get("gallery", "mixed")
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 2.4 * len(scopes)), 4.0), dpi=100, sharey=True)
    for ax, suffix, title in ((axes[0], "", "whole gallery"), (axes[1], "_within", "within group")):
        key = f"recall@1{suffix}"
        for i, (name, values) in enumerate(rows):
            heights = [(values.get(s) or {}).get(key) or 0.0 for s in scopes]
            positions = [x + (i - (len(rows) - 1) / 2) * width for x in range(len(scopes))]
            ax.bar(positions, heights, width, yerr=_yerr(values, scopes, key), capsize=3,
                   label=name, color=COLOURS[name], error_kw={"elinewidth": 1})
        if (suffix == "_within") == (gated == "within"):
            for x, scope in enumerate(scopes):
                bar = metrics["thresholds"].get(scope)
                if bar is not None:
                    ax.hlines(bar, x - 0.45, x + 0.45, colors="#d62728", linestyles="--",
                              label="bar" if x == 0 else None)
        ax.set_xticks(range(len(scopes)), scopes)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"Recall@1, {title}" + (" (gated)" if (suffix == "_within") == (gated == "within")
                                             else ""))
    axes[0].set_ylabel("Recall@1 (95 % interval)")
    axes[0].legend(loc="lower right", fontsize=8)
    return _png(fig)


def recall_curve_chart(metrics: Dict[str, Any]) -> bytes:
    """Recall@K against K for every group (candidate solid, baseline dashed), whole gallery;
    95 % error bars at the gate's ks."""
    curves = metrics["curves"]
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    for scope in _scopes(metrics):
        points = curves["candidate"].get(scope, {})
        ks = sorted(int(k) for k in points)
        line, = ax.plot(ks, [points[str(k)] for k in ks], marker="o", label=scope)
        entry = metrics["candidate"].get(scope, {})
        bars = [(k, entry[f"recall@{k}"], entry.get(f"recall@{k}_ci")) for k in ks
                if entry.get(f"recall@{k}") is not None and entry.get(f"recall@{k}_ci")]
        if bars:
            ax.errorbar([k for k, _, _ in bars], [v for _, v, _ in bars],
                        yerr=[[v - ci[0] for _, v, ci in bars], [ci[1] - v for _, v, ci in bars]],
                        fmt="none", ecolor=line.get_color(), capsize=3)
        baseline = curves.get("baseline", {}).get(scope)
        if baseline:
            ax.plot(ks, [baseline.get(str(k)) for k in ks], linestyle="--",
                    color=line.get_color())
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K")
    ax.set_ylim(0, 1.05)
    ax.set_title("Recall@K, whole gallery (dashed: baseline model)")
    ax.legend(fontsize=8)
    return _png(fig)


def det_chart(metrics: Dict[str, Any]) -> bytes:
    """DET curve per group (FNMR against FMR, log axes) from the exact kept impostor scores, with
    the operating point at the global threshold and its 95 % error bars in both directions."""
    verification = metrics.get("verification") or {}
    fig, ax = plt.subplots(figsize=(6.0, 4.5), dpi=100)
    floor = 1e-5
    for scope in _scopes(metrics):
        entry = verification.get(scope) or {}
        det = entry.get("det") or {}
        if not det.get("fmr"):
            continue
        fmr = [max(x, floor) for x in det["fmr"]]
        fnmr = [max(x, floor) for x in det["fnmr"]]
        line, = ax.plot(fmr, fnmr, label=scope, linewidth=2 if scope == OVERALL else 1)
        if entry.get("fmr") is not None and entry.get("fnmr") is not None:
            x, y = max(entry["fmr"], floor), max(entry["fnmr"], floor)
            xci, yci = entry.get("fmr_ci") or [x, x], entry.get("fnmr_ci") or [y, y]
            ax.errorbar([x], [y], xerr=[[max(0.0, x - max(xci[0], floor))], [max(0.0, xci[1] - x)]],
                        yerr=[[max(0.0, y - max(yci[0], floor))], [max(0.0, yci[1] - y)]],
                        fmt="o", color=line.get_color(), capsize=3, markersize=4)
    if verification.get("target_fmr"):
        ax.axvline(verification["target_fmr"], color="#777777", linestyle=":", label="target FMR")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FMR (impostor pairs matching)")
    ax.set_ylabel("FNMR (genuine pairs not matching)")
    ax.set_title("DET per group (points: global threshold, 95 % intervals)")
    ax.legend(fontsize=8)
    return _png(fig)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _fmt(value, signed=False, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "&ndash;"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _ci(interval, signed=False, missing=False, digits=4) -> str:
    """" [lo, hi]" (an infinite end as ∞); with `missing`, " no interval" when there is none."""
    if not interval:
        return " <span class='ci'>no interval</span>" if missing else ""
    return (f" <span class='ci'>[{_fmt(interval[0], signed, digits)}, "
            f"{_fmt(interval[1], signed, digits)}]</span>")


def _figure(value, interval, digits=4, approximate="") -> str:
    """A 1:1 figure with its interval, or "no interval" when it has a value but none; `approximate`
    (core.interval_quality.mark) after the interval."""
    return (_fmt(value, digits=digits) + _ci(interval, missing=value is not None, digits=digits)
            + (f"<span class='approx'>{approximate}</span>" if interval and approximate else ""))


def approximate_note(metrics: Dict[str, Any]) -> str:
    """The intervals marked approximate (metrics.json's `approximate_intervals`) and why."""
    items = "".join(f"<li><strong>{html.escape(figure)}</strong>: {html.escape(why)}</li>"
                    for figure, why in (metrics.get("approximate_intervals") or {}).items())
    return (f"<p class='approx'>{APPROXIMATE_MARK} approximate interval (its simulated coverage is "
            f"outside 0.93-0.97):</p><ul>{items}</ul>" if items else "")


def advisory_box(metrics: Dict[str, Any]) -> str:
    """The box above the rules naming what is not gated (empty without advisories)."""
    advisories = metrics.get("advisories") or []
    if not advisories:
        return ""
    items = "".join(f"<li>{html.escape(a['message'])}</li>" for a in advisories)
    return ("<div class='advisory'><strong>Not gated</strong> (advisories: they never change the "
            f"verdict; set the rule to gate them)<ul>{items}</ul></div>")


def _noise(verdict) -> str:
    beyond = verdict.get("beyond_noise")
    return "&ndash;" if beyond is None else ("yes" if beyond else "no (within noise)")


def _recall_rows(metrics: Dict[str, Any], ks) -> str:
    rows = []
    approximate = metrics.get("approximate_intervals") or {}
    ungated = set(metrics.get("ungated") or [])
    for scope in _scopes(metrics):
        candidate = metrics["candidate"][scope]
        baseline = (metrics.get("baseline") or {}).get(scope, {})
        pixels = (metrics.get("pixel_baseline") or {}).get(scope, {})
        delta = metrics["deltas"].get(scope, {})
        cells = [f"<td>{html.escape(scope)}{' (ungated)' if scope in ungated else ''}</td>",
                 f"<td>{candidate.get('n_identities', '&ndash;')}</td>",
                 f"<td>{candidate['n_queries']}</td>", f"<td>{candidate['n_skipped']}</td>"]
        for k in ks:
            key = f"recall@{k}"
            cells.append(f"<td>{_fmt(candidate.get(key))}{_ci(candidate.get(key + '_ci'))}"
                         f"{mark(approximate, key)}</td>")
            cells.append(f"<td>{_fmt(candidate.get(key + '_within'))}"
                         f"{_ci(candidate.get(key + '_within_ci'))}{mark(approximate, key + '_within')}</td>")
        cells += [f"<td>{_fmt(baseline.get('recall@1'))}</td>",
                  f"<td>{_fmt(delta.get('recall@1'), True)}{_ci(delta.get('recall@1_ci'), True)}"
                  f"{mark(approximate, 'delta recall@1')}</td>",
                  f"<td>{_fmt(pixels.get('recall@1'))}</td>",
                  f"<td>{_fmt(metrics['thresholds'].get(scope))}</td>"]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(rows)


def _verification_rows(metrics: Dict[str, Any]) -> str:
    verification = metrics.get("verification") or {}
    approximate = metrics.get("approximate_intervals") or {}
    rows = []
    for scope in _scopes(metrics):
        entry = verification.get(scope)
        if not entry:
            continue
        fars = [key for key in entry if key.startswith("tar@far=")]
        cells = [f"<td>{html.escape(scope)}</td>", f"<td>{entry['n_genuine']}</td>",
                 f"<td>{entry['n_impostor']}</td>",
                 f"<td>{_figure(entry.get('fnmr'), entry.get('fnmr_ci'), 4, mark(approximate, 'fnmr'))}</td>",
                 f"<td>{_figure(entry.get('fmr'), entry.get('fmr_ci'), 5, mark(approximate, 'fmr'))}</td>"]
        cells += [f"<td>{_fmt(entry.get(key))}</td>" for key in fars]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(rows)


# Nothing is fetched: images are data: URIs and the style is inline (the report may hold faces).
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_html(metrics: Dict[str, Any], charts: Dict[str, bytes], gallery_html: str = "") -> str:
    blessed = metrics["blessed"]
    ks = metrics["gate_config"]["ks"]
    gallery = metrics["gate_config"].get("gallery", "mixed")
    e = html.escape
    verification = metrics.get("verification") or {}
    approximate = metrics.get("approximate_intervals") or {}
    rules = "".join(
        f"<tr class='{'pass' if r['passed'] else 'fail'}'><td>{'PASS' if r['passed'] else 'FAIL'}"
        f"</td><td>{e(r['rule'])}</td><td>{e(r['scope'])}</td><td>{_noise(r)}</td>"
        f"<td>{e(r['message'])}{verdict_mark(approximate, r)}</td></tr>"
        for r in metrics["verdicts"])
    images = "".join(
        f"<figure><img alt='{e(name)}' src='data:image/png;base64,"
        f"{base64.b64encode(data).decode()}'><figcaption>{e(name)}.png</figcaption></figure>"
        for name, data in charts.items())
    k_headers = "".join(f"<th>Recall@{k}</th><th>Recall@{k} within</th>" for k in ks)
    any_scope = next((v for v in verification.values() if isinstance(v, dict)), {})
    far_headers = "".join(f"<th>TAR @ FAR {e(key.split('=', 1)[1])}</th>"
                          for key in any_scope if key.startswith("tar@far="))
    threshold = verification.get("threshold")
    level = metrics.get("confidence", 0.95)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>FFEM-TFX evaluation</title>
<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.ci {{ color: #666; font-size: 0.85em; }}
.verdict {{ font-size: 1.4em; padding: 0.5em 1em; display: inline-block; color: white; }}
.blessed {{ background: #2e7d32; }} .not-blessed {{ background: #c62828; }}
tr.fail td {{ background: #fdecea; }} tr.pass td:first-child {{ color: #2e7d32; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
.advisory {{ border: 2px solid #ef6c00; background: #fff3e0; padding: 0.5em 1em; margin: 1em 0; }}
.pairs {{ display: flex; flex-wrap: wrap; gap: 10px; }}
.pair {{ border: 1px solid #ccc; padding: 4px; }} .pair.error {{ border: 2px solid #c62828; }}
.crop {{ display: inline-block; margin: 2px; font-size: 0.7em; max-width: 120px;
         overflow-wrap: anywhere; vertical-align: top; }}
img.gallery {{ width: 112px; height: 112px; image-rendering: pixelated; display: block; }}
.score {{ font-size: 0.85em; }}
</style></head><body>
<h1>Model evaluation</h1>
<p class="verdict {'blessed' if blessed else 'not-blessed'}">{'BLESSED' if blessed else
                                                              'NOT BLESSED'}</p>
<p>Candidate: <code>{e(metrics['model']['uri'])}</code> (artifact {metrics['model']['id']})<br>
Baseline: <code>{e((metrics.get('baseline_model') or {}).get('uri') or 'none (first model)')}</code><br>
Eval split: <code>{e(metrics['split'])}</code>, {metrics['candidate'][OVERALL]['n_queries']} queries</p>
<h2>Release rules</h2>
<p>Gated Recall@1: {'within group' if gallery == 'within' else 'whole gallery'}. Intervals:
{level:.0%}, bootstrap over identities. "Beyond noise": the whole interval lies on the verdict's side
of the threshold.</p>
{advisory_box(metrics)}
<table><tr><th>verdict</th><th>rule</th><th>scope</th><th>beyond noise</th><th>detail</th></tr>{rules}</table>
<h2>Recall per group</h2>
<p>Recall@K ranks each query against the whole eval gallery (every group); "within" ranks it against
its own group only. Brackets: {level:.0%} intervals.</p>
<table><tr><th>group</th><th>identities</th><th>queries</th><th>skipped</th>{k_headers}
<th>baseline R@1</th><th>&Delta; R@1</th><th>raw pixels R@1</th><th>bar</th></tr>
{_recall_rows(metrics, ks)}</table>
<p>Raw pixels: nearest neighbour by cosine on the normalized crops ({e(str(metrics.get(
        'pixel_baseline_resolution', 'n/a')))}), a sanity anchor the model must clearly beat.</p>
<h2>1:1 verification at one global threshold</h2>
<p>Threshold {_fmt(threshold)}: the score that {_fmt(verification.get('target_fmr'))} of all impostor
pairs reach (target FMR). FNMR: genuine pairs of the group below it; FMR: impostor pairs with both
images in the group at or above it. FMR differential (max FMR / target):
{_figure(verification.get('fmr_differential'), verification.get('fmr_differential_ci'), 2,
         mark(approximate, 'fmr_differential'))};
skewed error ratio (max / min FNMR): {_figure(verification.get('skewed_error_ratio'),
                                              verification.get('skewed_error_ratio_ci'), 2,
                                              mark(approximate, 'skewed_error_ratio'))}.</p>
{approximate_note(metrics)}
<table><tr><th>group</th><th>genuine pairs</th><th>impostor pairs</th><th>FNMR</th><th>FMR</th>
{far_headers}</tr>{_verification_rows(metrics)}</table>
<h2>Charts</h2>{images}
{gallery_html}
</body></html>
"""


def charts_of(metrics: Dict[str, Any]) -> Dict[str, bytes]:
    return {"recall_at_1_by_group": recall_bar_chart(metrics),
            "recall_at_k": recall_curve_chart(metrics),
            "det": det_chart(metrics)}


def write_report(metrics: Dict[str, Any], output_dir: str, gallery_html: str = "") -> Dict[str, str]:
    """Writes report.html (with the error gallery's section, components/recall_evaluator/
    gallery.py) and the chart PNGs; returns their paths."""
    import tensorflow as tf  # gfile: works for gs:// too

    charts = charts_of(metrics)
    paths = {}
    for name, data in charts.items():
        paths[name] = os.path.join(output_dir, f"{name}.png")
        with tf.io.gfile.GFile(paths[name], "wb") as f:
            f.write(data)
    paths["report"] = os.path.join(output_dir, "report.html")
    with tf.io.gfile.GFile(paths["report"], "w") as f:
        f.write(render_html(metrics, charts, gallery_html))
    return paths
