"""The report of an evaluation run, made from its folder alone (so a resumed or merged run reports
every finished pair): ``table.md``, ``distributions.png``, ``time_vs_quality.png`` and ``index.html``.

Every file reads the finished pairs (:func:`finished_records`: one per asset x method, the last
line of a pair wins).

* ``table.md``: the paper's table layout (method | FID | CLIP | DINO | time), with the paper's
  numbers (:data:`PAPER_TABLE`, SPEC section 6) beside ours, then the per-view and geometry
  metrics, all over the **common assets** (:func:`common_assets`: those every method of the run
  finished), so that a method which failed on some assets is not measured on an easier or
  smaller set than the others; the header states the common n and each method's own n. A
  second table, "all finished assets per method", gives each method over every asset it
  finished (its own n). FID per method is computed over all its views against the
  ground-truth views of the same assets (:func:`.fid.frechet_distance` of the saved Inception
  features); the number of views behind it is shown, with a warning under
  :data:`FID_MIN_VIEWS`, and an FID that could not be computed shows the reason.
* plots (matplotlib, Agg): per-asset distributions of each measured metric by method and mean
  time against mean quality (CLIP and DINO similarity when measured), over the common assets.
* ``index.html``: per asset a row of grids, coarse | each method | ground truth, with relative
  paths, no script and no external resource, so the folder opens offline.
"""

from __future__ import annotations

import html
import json
import io
import math
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from ..atomic import write_bytes_atomic
from .records import CONFIG_FILE, FAILURES_FILE, RESULTS_FILE, read_jsonl

__all__ = ["PAPER_TABLE", "PAPER_NAMES", "FID_MIN_VIEWS", "finished_records", "common_assets", "summarize", "unresolved_failures", "write_table", "write_plots",
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
#: Below this many views an FID is flagged in ``table.md``: with fewer samples than the 2048
#: Inception pool3 dimensions the sample covariance is rank-deficient and FID is biased upward
#: (Chong & Forsyth 2020, "Effectively Unbiased FID"), so small runs are not comparable with the paper.
FID_MIN_VIEWS = 2048
#: Views behind the paper's FIDs: 6k test objects x the six Zero123++ views (SPEC section 6).
PAPER_FID_VIEWS = 6000 * 6


def finished_records(out: Path) -> List[dict]:
    """The finished pairs of ``out``: one record per (asset, method) of ``results.jsonl`` (the last
    line of a pair wins), in the order the pairs first appear. The table, the plots and the gallery
    all read these."""
    latest: Dict[Tuple[str, str], dict] = {}
    for r in read_jsonl(out / RESULTS_FILE):
        if "asset" in r and "method" in r:
            latest[(r["asset"], r["method"])] = r   # a dict keeps the first position, takes the new value
    return list(latest.values())


def common_assets(records: List[dict]) -> Set[str]:
    """The assets every method in ``records`` finished (empty when there is no record)."""
    by_method: Dict[str, Set[str]] = {}
    for r in records:
        by_method.setdefault(r["method"], set()).add(r["asset"])
    return set.intersection(*by_method.values()) if by_method else set()


def _fid(out: Path, rows: List[dict]) -> Tuple[float, int, Optional[str]]:
    """``(FID, views, reason)`` of one method over ``rows``: its saved Inception features against
    the ground-truth features of the same assets. ``reason`` says why FID is missing (None when
    it was computed, or when the run did not measure it: no row has features)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..errors import SharpItError
    from .fid import frechet_distance

    have = [r for r in rows if r.get("features")]
    if not have:
        return float("nan"), 0, None
    if len(have) < len(rows):
        return float("nan"), 0, (f"{len(rows) - len(have)} of {len(rows)} asset(s) have no saved Inception "
                                 "features (measured by a run without fid); rerun them with fid in --metrics")
    try:
        ours = torch.cat([load_file(str(out / r["features"]))["inception_pool3"] for r in rows])
        gt = torch.cat([load_file(str(out / "features" / r["asset"] / "ground_truth.safetensors"))["inception_pool3"]
                        for r in rows])
        return frechet_distance(ours, gt), len(ours), None
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, SharpItError) as exc:
        return float("nan"), 0, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def summarize(out: Path, assets: Optional[Set[str]] = None,
              records: Optional[List[dict]] = None) -> Dict[str, Dict[str, Any]]:
    """Per method (in the order first seen): ``n`` (assets), FID with ``fid_views`` (the number
    of views behind it) and ``fid_error`` (why it is missing, or None), the mean of every per-asset
    metric, peak memory and the mean metric and ground-truth times.

    Args:
        assets: only these assets (e.g. :func:`common_assets`, so every method is measured on the
            same set); None: every asset each method finished.
        records: the finished pairs (:func:`finished_records` of ``out`` when None).
    """
    records = finished_records(out) if records is None else records
    by_method: Dict[str, List[dict]] = {}
    for r in records:
        rows = by_method.setdefault(r["method"], [])
        if assets is None or r["asset"] in assets:
            rows.append(r)
    summary: Dict[str, Dict[str, Any]] = {}
    for method, rows in by_method.items():
        s: Dict[str, Any] = {"n": len(rows)}
        for key in _PER_ASSET:
            values = [float(r[key]) for r in rows if r.get(key) is not None and math.isfinite(float(r[key]))]
            s[key] = sum(values) / len(values) if values else float("nan")
        s["peak_memory_gib"] = max((r["peak_memory_bytes"] for r in rows), default=float("nan")) / 2 ** 30
        s["metrics_seconds"] = sum(r["metrics_seconds"] for r in rows) / len(rows) if rows else float("nan")
        s["fid"], s["fid_views"], s["fid_error"] = _fid(out, rows) if rows else (float("nan"), 0, None)
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


def _fid_cell(s: Dict[str, Any]) -> str:
    return "error (below)" if s.get("fid_error") else _f(s.get("fid"))


def _views_cell(s: Dict[str, Any]) -> str:
    return str(int(s["fid_views"])) if s.get("fid_views") else "-"


def _fid_notes(summary: Dict[str, Dict[str, Any]], where: str) -> List[str]:
    """The lines under a table: why an FID is missing, and a warning when one rests on fewer than
    :data:`FID_MIN_VIEWS` views."""
    lines = [f"FID of {m} ({where}) not computed: {s['fid_error']}" for m, s in summary.items() if s.get("fid_error")]
    few = [f"{m} {int(s['fid_views'])}" for m, s in summary.items()
           if s.get("fid_views") and s["fid_views"] < FID_MIN_VIEWS and math.isfinite(s["fid"])]
    if few:
        lines.append(f"Warning: FID over fewer than {FID_MIN_VIEWS} views ({', '.join(few)} views): the "
                     f"{FID_MIN_VIEWS}-d feature covariance is rank-deficient and FID is biased upward, so it is not "
                     f"comparable with the paper's ({PAPER_FID_VIEWS} views: 6k objects x 6 views); compare such "
                     "values only with FIDs over the same number of views.")
    return ["", *lines] if lines else []


def _is_tiny_run(out: Path) -> bool:
    """Whether the run folder's ``config.json`` says ``--tiny`` (random tiny models)."""
    try:
        return bool(json.loads((Path(out) / CONFIG_FILE).read_text()).get("tiny"))
    except (OSError, ValueError, AttributeError):
        return False


def write_table(out: Path, summary: Dict[str, Dict[str, Any]],
                finished: Optional[Dict[str, Dict[str, Any]]] = None) -> str:
    """``table.md``; returns the text.

    Args:
        summary: :func:`summarize` over the assets every method finished (:func:`common_assets`):
            the main tables, the paper's rows beside ours.
        finished: :func:`summarize` over every asset each method finished (its own n): the
            second table, "all finished assets per method" (left out when None).
    """
    n_common = max((int(s["n"]) for s in summary.values()), default=0)
    counts = ", ".join(f"{m}: {int(s['n'])}" for m, s in (finished or summary).items())
    lines = ["# Evaluation", ""]
    if _is_tiny_run(out):
        lines += ["**A `--tiny` run: random tiny models, so the numbers below measure nothing (a smoke test of "
                  "the harness).**", ""]
    lines += [f"Paper: Sharp-It (arXiv 2412.02631), 6k held-out Objaverse objects x 6 views. Ours: this run, over the "
              f"{n_common} asset(s) that every method finished (assets finished per method: {counts}), so every row "
              "is measured on the same objects; FID per method is over all views of those assets against their "
              "ground-truth views.", "",
              "| method | FID paper | FID ours | FID views | CLIP paper | CLIP ours | DINO paper | DINO ours | "
              "time paper | time ours |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    shown = set()
    for paper_name, (fid, clip, dino, t) in PAPER_TABLE.items():
        method = next((m for m, p in PAPER_NAMES.items() if p == paper_name and m in summary), None)
        s = summary.get(method, {}) if method else {}
        if method:
            shown.add(method)
        lines.append(f"| {paper_name} | {fid:.2f} | {_fid_cell(s)} | {_views_cell(s)} | {clip:.2f} | "
                     f"{_f(s.get('clip'))} | {dino:.2f} | {_f(s.get('dino'))} | {t} | "
                     f"{_f(s.get('seconds'), 1) + ' s' if s else '-'} |")
    for method, s in summary.items():
        if method not in shown:
            label = "Shap-E (coarse)" if method == "shap_e" else method
            lines.append(f"| {label} | - | {_fid_cell(s)} | {_views_cell(s)} | - | {_f(s['clip'])} | - | "
                         f"{_f(s['dino'])} | - | {_f(s['seconds'], 1)} s |")
    lines += _fid_notes(summary, "common assets")
    lines += ["", "Per view against the ground-truth renders, and geometry against the ground-truth mesh "
              "(means over the same assets; LPIPS v0.1, lower is closer; Chamfer unsquared, F-score at 0.05 of the "
              "normalised object; metrics (s): a method's own metric time, without the ground truth's; "
              "'-': not measured in this run):", "",
              "| method | assets | PSNR (dB) | SSIM | LPIPS | Chamfer | F-score | time (s) | peak memory (GiB) | metrics (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for method, s in summary.items():
        lines.append(f"| {method} | {int(s['n'])} | {_f(s['psnr'])} | {_f(s['ssim'], 3)} | {_f(s['lpips'], 3)} | "
                     f"{_f(s['chamfer'], 4)} | "
                     f"{_f(s['fscore'], 3)} | {_f(s['seconds'], 1)} | {_f(s['peak_memory_gib'])} | "
                     f"{_f(s['metrics_seconds'], 2)} |")
    per_asset: Dict[str, float] = {}   # the records of one asset share its ground-truth time
    for r in finished_records(out):
        if r.get("ground_truth_seconds") is not None:
            per_asset.setdefault(r["asset"], float(r["ground_truth_seconds"]))
    if per_asset:
        lines += ["", f"Ground truth (render and metric features, once per asset, shared by every method and in "
                      f"no method's metrics time): {sum(per_asset.values()) / len(per_asset):.2f} s per asset "
                      f"(mean over {len(per_asset)})."]
    if finished is not None:
        lines += ["", "## All finished assets per method", "",
                  "Each method over every asset it finished (its own n: where some method failed on an asset, "
                  "rows are not measured on the same objects and do not compare row to row):", "",
                  "| method | assets | FID | FID views | CLIP | DINO | PSNR (dB) | SSIM | LPIPS | Chamfer | F-score | "
                  "time (s) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for method, s in finished.items():
            lines.append(f"| {method} | {int(s['n'])} | {_fid_cell(s)} | {_views_cell(s)} | {_f(s['clip'])} | "
                         f"{_f(s['dino'])} | {_f(s['psnr'])} | {_f(s['ssim'], 3)} | {_f(s['lpips'], 3)} | "
                         f"{_f(s['chamfer'], 4)} | {_f(s['fscore'], 3)} | {_f(s['seconds'], 1)} |")
        lines += _fid_notes(finished, "all its finished assets")
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


def write_plots(out: Path, summary: Dict[str, Dict[str, Any]], records: Optional[List[dict]] = None) -> None:
    """``distributions.png`` (per-asset values by method of each metric the run measured) and
    ``time_vs_quality.png`` (mean time against the first two of CLIP, DINO, FID, LPIPS, ... the run has).

    Args:
        summary: the per-method summary the table shows (:func:`summarize`).
        records: the per-asset records behind it, one per (asset, method) (default: every finished
            pair, :func:`finished_records`); :func:`write_report` passes those of the common assets.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    records = finished_records(out) if records is None else records
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


def write_report(out: Path) -> Dict[str, Dict[str, Any]]:
    """Every report file of the run folder ``out``; returns the per-method summary over the assets
    every method finished (:func:`common_assets`), the one of the main table and the plots."""
    out = Path(out)
    records = finished_records(out)
    common = common_assets(records)
    shared = [r for r in records if r["asset"] in common]
    summary = summarize(out, common, records)
    write_table(out, summary, summarize(out, None, records))
    if summary:
        write_plots(out, summary, shared)
    write_gallery(out, summary)   # last: it links the files above that exist
    return summary
