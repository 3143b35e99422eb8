"""The report of an evaluation run, made from its folder alone (so a resumed or merged run reports
every finished pair): ``table.md``, ``distributions.png``, ``time_vs_quality.png`` and ``index.html``.

* ``table.md``: the paper's table layout (method | FID | CLIP | DINO | time), with the paper's
  numbers (:data:`PAPER_TABLE`, SPEC section 6) beside ours, then the per-view and geometry
  metrics. FID per method is computed over all its views against the ground-truth views of the
  same assets (:func:`.fid.frechet_distance` of the saved Inception features).
* plots (matplotlib, Agg): per-asset distributions of each measured metric by method; mean time
  against mean quality (CLIP and DINO similarity when measured).
* ``index.html``: per asset a row of grids, coarse | each method | ground truth, with relative
  paths, no script and no external resource, so the folder opens offline.
"""

from __future__ import annotations

import html
import io
import math
import urllib.parse
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..atomic import write_bytes_atomic
from .records import FAILURES_FILE, RESULTS_FILE, read_jsonl

__all__ = ["PAPER_TABLE", "PAPER_NAMES", "summarize", "unresolved_failures", "write_table", "write_plots",
           "write_gallery", "write_report"]

#: The paper's table (SPEC section 6): FID, CLIP, DINO, time per object, on 6k Objaverse objects.
PAPER_TABLE = {
    "Sharp-It": (6.60, 0.90, 0.92, "~10 s"),
    "Zero123++ + SDEdit": (19.13, 0.87, 0.89, "~10 s"),
    "MVDream + SDEdit": (28.71, 0.81, 0.83, "~10 s"),
    "MVEdit": (44.87, 0.83, 0.77, "~1 min"),
    "GaussianDreamer": (50.89, 0.81, 0.82, "~6 min"),
}
#: The paper's row of each built-in method.
PAPER_NAMES = {"sharpit": "Sharp-It", "zero123plus_sdedit": "Zero123++ + SDEdit"}
_PER_ASSET = ("clip", "dino", "psnr", "ssim", "lpips", "chamfer", "fscore", "seconds")
#: Per-asset metrics the distribution plot shows (those the run measured), and the quality
#: axes of the time-vs-quality plot (the first two the run has).
_PLOTTED = ("clip", "dino", "lpips", "psnr", "ssim", "chamfer", "fscore")
_QUALITY = ("clip", "dino", "fid", "lpips", "ssim", "psnr", "fscore", "chamfer")


def summarize(out: Path) -> Dict[str, Dict[str, float]]:
    """Per method (in the order first seen): n, FID, and the mean of every per-asset metric."""
    import torch
    from safetensors.torch import load_file

    from .fid import frechet_distance

    records = read_jsonl(out / RESULTS_FILE)
    by_method: Dict[str, List[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    summary: Dict[str, Dict[str, float]] = {}
    for method, rows in by_method.items():
        rows = list({r["asset"]: r for r in rows}.values())   # one line per asset (the last wins)
        s: Dict[str, float] = {"n": len(rows)}
        for key in _PER_ASSET:
            values = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
            s[key] = sum(values) / len(values) if values else float("nan")
        s["peak_memory_gib"] = max(r["peak_memory_bytes"] for r in rows) / 2 ** 30
        s["metrics_seconds"] = sum(r["metrics_seconds"] for r in rows) / len(rows)
        s["fid"] = float("nan")
        if not all(r.get("features") for r in rows):   # a run without FID (--metrics)
            summary[method] = s
            continue
        try:
            ours = torch.cat([load_file(str(out / r["features"]))["inception_pool3"] for r in rows])
            gt = torch.cat([load_file(str(out / "features" / r["asset"] / "ground_truth.safetensors"))["inception_pool3"]
                            for r in rows])
            s["fid"] = frechet_distance(ours, gt)
        except (OSError, ValueError, KeyError, RuntimeError):
            pass
        summary[method] = s
    return summary


def unresolved_failures(out: Path) -> List[Tuple[str, Optional[str]]]:
    """``(asset, method or None)`` of the failures in ``failures.jsonl`` that no later result
    replaced, each once, sorted. ``failures.jsonl`` keeps every attempt (a rerun that fails again
    appends again, one that succeeds leaves the old line): a failure of an asset x method is
    resolved by a result of that pair, a failure of the asset itself (method None) by any result
    of the asset."""
    done = {(r.get("asset"), r.get("method")) for r in read_jsonl(out / RESULTS_FILE)}
    assets = {a for a, _ in done}
    missing = {(f.get("asset"), f.get("method")) for f in read_jsonl(out / FAILURES_FILE)}
    return sorted(((a, m) for a, m in missing if not (a in assets if m is None else (a, m) in done)),
                  key=lambda pair: (str(pair[0]), str(pair[1])))


def _f(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_table(out: Path, summary: Dict[str, Dict[str, float]]) -> str:
    """``table.md``: the paper's rows and ours side by side; returns the text."""
    counts = ", ".join(f"{m}: {int(s['n'])} assets" for m, s in summary.items())
    lines = ["# Evaluation", "",
             f"Paper: Sharp-It (arXiv 2412.02631), 6k held-out Objaverse objects. Ours: this run ({counts}).", "",
             "| method | FID paper | FID ours | CLIP paper | CLIP ours | DINO paper | DINO ours | time paper | time ours |",
             "|---|---|---|---|---|---|---|---|---|"]
    shown = set()
    for paper_name, (fid, clip, dino, t) in PAPER_TABLE.items():
        method = next((m for m, p in PAPER_NAMES.items() if p == paper_name and m in summary), None)
        s = summary.get(method, {}) if method else {}
        if method:
            shown.add(method)
        lines.append(f"| {paper_name} | {fid:.2f} | {_f(s.get('fid'))} | {clip:.2f} | {_f(s.get('clip'))} | "
                     f"{dino:.2f} | {_f(s.get('dino'))} | {t} | {_f(s.get('seconds'), 1) + ' s' if s else '-'} |")
    for method, s in summary.items():
        if method not in shown:
            label = "Shap-E (coarse)" if method == "shap_e" else method
            lines.append(f"| {label} | - | {_f(s['fid'])} | - | {_f(s['clip'])} | - | {_f(s['dino'])} | - | "
                         f"{_f(s['seconds'], 1)} s |")
    lines += ["", "Per view against the ground-truth renders, and geometry against the ground-truth mesh "
              "(means over assets; LPIPS v0.1, lower is closer; Chamfer unsquared, F-score at 0.05 of the "
              "normalised object; '-': not measured in this run):", "",
              "| method | assets | PSNR (dB) | SSIM | LPIPS | Chamfer | F-score | time (s) | peak memory (GiB) | metrics (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for method, s in summary.items():
        lines.append(f"| {method} | {int(s['n'])} | {_f(s['psnr'])} | {_f(s['ssim'], 3)} | {_f(s['lpips'], 3)} | "
                     f"{_f(s['chamfer'], 4)} | "
                     f"{_f(s['fscore'], 3)} | {_f(s['seconds'], 1)} | {_f(s['peak_memory_gib'])} | "
                     f"{_f(s['metrics_seconds'], 2)} |")
    missing = unresolved_failures(out)
    if missing:
        lines += ["", f"{len(missing)} asset(s) or asset x method pair(s) failed and are not in these numbers "
                  f"(reasons in {FAILURES_FILE}; a rerun retries them): "
                  + ", ".join(a if m is None else f"{a} x {m}" for a, m in missing[:10])
                  + (", ..." if len(missing) > 10 else "") + "."]
    text = "\n".join(lines) + "\n"
    write_bytes_atomic(out / "table.md", text.encode("utf-8"))
    return text


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def write_plots(out: Path, summary: Dict[str, Dict[str, float]]) -> None:
    """``distributions.png`` (per-asset values by method of each metric the run measured) and
    ``time_vs_quality.png`` (mean time against the first two of CLIP, DINO, FID, LPIPS, ... the run has)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    records = read_jsonl(out / RESULTS_FILE)
    methods = list(summary)
    keys = [k for k in _PLOTTED if any(r.get(k) is not None for r in records)]
    if keys:
        cols = min(3, len(keys))
        rows = -(-len(keys) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.5 * rows), squeeze=False)
        for ax in axes.flat[len(keys):]:
            ax.set_visible(False)
        for ax, key in zip(axes.flat, keys):
            data = [[float(r[key]) for r in records if r["method"] == m and r.get(key) is not None
                     and math.isfinite(float(r[key]))] for m in methods]
            ax.boxplot([d if d else [float("nan")] for d in data], showmeans=True)
            ax.set_xticks(range(1, len(methods) + 1), methods, rotation=20, fontsize=8)
            ax.set_title(key)
        fig.suptitle("per-asset metrics by method")
        write_bytes_atomic(out / "distributions.png", _png(fig))
        plt.close(fig)
    axes_keys = [k for k in _QUALITY if any(math.isfinite(summary[m].get(k, float("nan"))) for m in methods)][:2]
    if axes_keys:
        fig, axes = plt.subplots(1, len(axes_keys), figsize=(5.5 * len(axes_keys), 4), squeeze=False)
        for ax, key in zip(axes.flat, axes_keys):
            for m in methods:
                ax.scatter([summary[m]["seconds"]], [summary[m][key]], label=m)
            ax.set_xscale("log")
            ax.set_xlabel("time per asset (s, log)")
            ax.set_ylabel(key if key == "fid" else f"mean {key}")
            ax.legend(fontsize=8)
        fig.suptitle("time vs quality")
        write_bytes_atomic(out / "time_vs_quality.png", _png(fig))
        plt.close(fig)


def write_gallery(out: Path, summary: Dict[str, Dict[str, float]]) -> None:
    """``index.html``: a table per asset of coarse | methods | ground truth grids (relative links)."""
    records = read_jsonl(out / RESULTS_FILE)
    keys = {}
    for r in records:
        keys.setdefault(r["method"], r["method_key"])
    assets: Dict[str, str] = {}
    for r in records:
        assets.setdefault(r["asset"], r.get("caption", ""))
    head = ["coarse"] + [m for m in summary] + ["ground truth"]
    rows = []
    for asset, caption in sorted(assets.items()):
        cells = []
        for name, file in [("coarse", "coarse.png")] + [(m, f"{keys[m]}.png") for m in summary] + \
                [("ground truth", "ground_truth.png")]:
            rel = f"grids/{asset}/{file}"   # a URL: the asset id percent-encoded ('#', '?', '%', spaces)
            cells.append(f'<td><img src="{html.escape(urllib.parse.quote(rel))}" alt="{html.escape(name)}" '
                         'width="160"></td>' if (out / rel).is_file() else "<td>-</td>")
        rows.append(f"<tr><th>{html.escape(asset)}<br><small>{html.escape(caption)}</small></th>{''.join(cells)}</tr>")
    links = [f'<a href="{file}">{label}</a>' for file, label in (("table.md", "table.md"), ("distributions.png",
             "distributions"), ("time_vs_quality.png", "time vs quality")) if (out / file).is_file()]
    page = ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>sharpit evaluation</title>"
            "<style>body{font-family:sans-serif}td,th{padding:4px;vertical-align:top}img{display:block}</style>"
            "</head><body><h1>sharpit evaluation</h1><p>" + " · ".join(links) + "</p>"
            "<table><tr><th>asset</th>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>\n"
            + "\n".join(rows) + "\n</table></body></html>\n")
    write_bytes_atomic(out / "index.html", page.encode("utf-8"))


def write_report(out: Path) -> Dict[str, Dict[str, float]]:
    """Every report file of the run folder ``out``; returns the per-method summary."""
    out = Path(out)
    summary = summarize(out)
    write_table(out, summary)
    if summary:
        write_plots(out, summary)
    write_gallery(out, summary)   # last: it links the files above that exist
    return summary
