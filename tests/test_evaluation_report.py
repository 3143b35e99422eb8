"""The report of an evaluation run folder (sharpit.evaluation.report), on a synthetic folder:
gallery links that are valid URLs for any asset id."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

from sharpit.evaluation.records import append_jsonl
from sharpit.evaluation.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _record(asset, method="shap_e", **metrics):
    return {"asset": asset, "method": method, "method_key": method, "caption": "a thing", "seconds": 1.0,
            "peak_memory_bytes": 2 ** 30, "metrics_seconds": 0.1, "grid": f"grids/{asset}/{method}.png",
            "clip": 0.9, **metrics}


def _run_folder(out: Path, assets):
    for asset in assets:
        (out / "grids" / asset).mkdir(parents=True)
        for name in ("coarse.png", "shap_e.png", "ground_truth.png"):
            (out / "grids" / asset / name).write_bytes(PNG)
        append_jsonl(out / "results.jsonl", _record(asset))


def test_gallery_links_percent_encode_asset_ids(tmp_path):
    assets = ["chair #2", "50%off?"]
    _run_folder(tmp_path, assets)
    write_report(tmp_path)
    page = (tmp_path / "index.html").read_text()
    links = re.findall(r'src="([^"]+)"', page)
    assert len(links) == 6
    for link in links:   # what a browser resolves: the URL path, unquoted, is the file
        assert "#" not in link and "?" not in link and " " not in link
        assert (tmp_path / urllib.parse.unquote(link)).is_file(), link


def test_table_counts_only_failures_no_later_result_replaced(tmp_path):
    _run_folder(tmp_path, ["cube", "mug"])
    for failure in ({"asset": "cube", "method": "shap_e"},      # failed once, then done by a rerun
                    {"asset": "mug", "method": None},           # the asset failed, then done
                    {"asset": "wreck", "method": None},         # still broken: logged on two runs
                    {"asset": "wreck", "method": None},
                    {"asset": "mug", "method": "sharpit"}):     # a method still failing on a done asset
        append_jsonl(tmp_path / "failures.jsonl", {**failure, "error": "CorruptFileError", "message": "..."})
    write_report(tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "2 asset(s) or asset x method pair(s) failed" in table and "mug x sharpit, wreck." in table, table


def test_cpu_peak_memory_is_in_bytes_on_linux_and_macos(monkeypatch):
    import resource
    import sys
    from types import SimpleNamespace

    from sharpit.evaluation.methods import measure

    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=3000))
    for platform, expected in (("linux", 3000 * 1024), ("darwin", 3000)):   # ru_maxrss: KiB on Linux, bytes on macOS
        monkeypatch.setattr(sys, "platform", platform)
        with measure("cpu") as m:
            pass
        assert m.peak_memory_bytes == expected and m.memory_kind == "cpu_max_rss"
