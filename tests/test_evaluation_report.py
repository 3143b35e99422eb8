"""The report of an evaluation run folder (sharpit.evaluation.report), on a synthetic folder:
gallery links that are valid URLs for any asset id."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest

from sharpit.errors import OutputExistsError
from sharpit.evaluation.records import append_jsonl, check_config, write_config
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


def _features(out: Path, asset: str, name: str, seed: int):
    import torch
    from safetensors.torch import save_file

    path = out / "features" / asset / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    save_file({"inception_pool3": torch.rand(6, 2048, generator=g, dtype=torch.float64) + 0.1 * seed}, str(path))
    return path


def _two_methods(out: Path):
    """shap_e finished cube, mug and ball; sharpit only cube and mug (it failed on ball)."""
    clips = {("cube", "shap_e"): 0.5, ("mug", "shap_e"): 0.5, ("ball", "shap_e"): 0.9,
             ("cube", "sharpit"): 0.6, ("mug", "sharpit"): 0.6}
    for i, asset in enumerate(("cube", "mug", "ball")):
        _features(out, asset, "ground_truth", 10 + i)
    for i, ((asset, method), clip) in enumerate(clips.items()):
        _features(out, asset, method, i)
        append_jsonl(out / "results.jsonl", _record(asset, method, clip=clip, features=f"features/{asset}/{method}.safetensors"))
    append_jsonl(out / "failures.jsonl", {"asset": "ball", "method": "sharpit", "error": "RuntimeError", "message": "x"})


def _fid_of(out: Path, method: str, assets):
    import torch
    from safetensors.torch import load_file

    from sharpit.evaluation.fid import frechet_distance

    load = lambda a, n: load_file(str(out / "features" / a / f"{n}.safetensors"))["inception_pool3"]  # noqa: E731
    return frechet_distance(torch.cat([load(a, method) for a in assets]), torch.cat([load(a, "ground_truth") for a in assets]))


def test_main_table_is_over_the_assets_every_method_finished_and_a_second_over_all(tmp_path):
    _two_methods(tmp_path)
    summary = write_report(tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "--tiny" not in table   # no config.json here: not a tiny run
    assert summary["shap_e"]["n"] == summary["sharpit"]["n"] == 2
    assert "over the 2 asset(s) that every method finished (assets finished per method: shap_e: 3, sharpit: 2)" in table
    common = {m: _fid_of(tmp_path, m, ["cube", "mug"]) for m in ("shap_e", "sharpit")}
    # the main table: the same two assets for both (shap_e's mean CLIP without ball's 0.9), 12 views each
    assert f"| Sharp-It | 6.60 | {common['sharpit']:.2f} | 12 | 0.90 | 0.60 |" in table, table
    assert f"| Shap-E (coarse) | - | {common['shap_e']:.2f} | 12 | - | 0.50 |" in table, table
    assert "| shap_e | 2 |" in table and "| sharpit | 2 |" in table
    # the second table: each method over all it finished
    main, rest = table.split("## All finished assets per method")
    everything = _fid_of(tmp_path, "shap_e", ["cube", "mug", "ball"])
    assert f"| shap_e | 3 | {everything:.2f} | 18 | 0.63 |" in rest, rest
    assert f"| sharpit | 2 | {common['sharpit']:.2f} | 12 | 0.60 |" in rest, rest
    # small sets: a warning that FID over < 2048 views is biased, under each table
    assert "Warning: FID over fewer than 2048 views (shap_e 12, sharpit 12 views)" in main
    assert "Warning: FID over fewer than 2048 views (shap_e 18, sharpit 12 views)" in rest


def test_an_fid_that_cannot_be_computed_says_why(tmp_path):
    _two_methods(tmp_path)
    (tmp_path / "features" / "mug" / "sharpit.safetensors").write_bytes(b"not a safetensors file")
    write_report(tmp_path)
    table = (tmp_path / "table.md").read_text()
    assert "| Sharp-It | 6.60 | error (below) | - | 0.90 |" in table, table
    assert re.search(r"FID of sharpit \(common assets\) not computed: SafetensorError: \S", table), table
    assert "FID of sharpit (all its finished assets) not computed: SafetensorError" in table
    assert "FID of shap_e" not in table


def test_plots_use_the_table_records_one_per_asset(tmp_path, monkeypatch):
    """A pair written twice (a merged or repeated run): the distribution plot shows the line the
    table keeps (the last), once, over the same common assets."""
    import matplotlib.axes

    _two_methods(tmp_path)
    append_jsonl(tmp_path / "results.jsonl", _record("cube", "shap_e", clip=0.7))   # replaces cube x shap_e's 0.5
    seen = {}
    real = matplotlib.axes.Axes.boxplot

    def boxplot(ax, data, *args, **kwargs):
        seen[len(seen)] = [sorted(d) for d in data]
        return real(ax, data, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "boxplot", boxplot)
    summary = write_report(tmp_path)
    assert seen[0] == [[0.5, 0.7], [0.6, 0.6]]   # clip by method: mug 0.5 and cube's last 0.7; ball not common
    assert summary["shap_e"]["clip"] == pytest.approx(0.6)


def test_a_folder_with_another_process_config_being_written_is_not_foreign(tmp_path):
    """Each process of a launch checks --out, then writes config.json: a process that looks while
    another one's temporary exists (and config.json not yet) must not refuse the run (it did: rank 1
    exited with 2, and torchrun stopped rank 0 with it)."""
    from sharpit.atomic import atomic_path

    config = {"version": 1, "seed": 0, "methods": {"shap_e": {"name": "shap_e", "path": None}}}
    out = tmp_path / "run"
    out.mkdir()
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text("{")                                   # half written, under its temporary name
        assert check_config(out, config) == config
    write_config(out, config)
    assert check_config(out, config) == config
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="no config.json"):
        check_config(tmp_path / "mine", config)


def test_a_config_json_landing_between_the_two_looks_is_read(tmp_path, monkeypatch):
    """The other process's config.json can land after this one saw none and before it lists the
    folder: it is then read, not called foreign content."""
    import sharpit.evaluation.records as records
    from sharpit.atomic import is_temporary

    config = {"version": 1, "seed": 0, "methods": {"shap_e": {"name": "shap_e", "path": None}}}
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.jsonl").write_text("")           # the other process is already writing results

    def landing(path):
        write_config(out, config)                     # lands while this process lists the folder
        return is_temporary(path)

    monkeypatch.setattr(records, "is_temporary", landing)
    assert check_config(out, config) == config
