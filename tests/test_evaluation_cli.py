"""sharpit-evaluate end to end (issue 12): a --tiny run split across two real gloo processes, a
broken asset logged and skipped (exit 4), the report files, resuming; every method (and saved
pipeline folders) with a cheap metric set; missing extractor weights (exit 3) and bad input in one
line (more bad-input cases in tests/test_cli_bad_input.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from sharpit.evaluation.methods import MethodOutput, MethodSpec
from sharpit.evaluation.run import EvalAsset, evaluate_asset

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny models and extractors (built once into a module cache) and a set of two assets:
    the generated cube and a broken GLB, each with a latent and a caption."""
    from sharpit.testing.evaluation import save_tiny_eval_inputs
    from sharpit.testing.pipeline import save_tiny_models

    root = tmp_path_factory.mktemp("eval")
    cache = root / "cache"
    save_tiny_models(cache / "tiny-models")
    paths = save_tiny_eval_inputs(cache / "tiny-models")
    assets, latents = root / "assets", root / "latents"
    assets.mkdir()
    latents.mkdir()
    shutil.copy(Path(paths["assets"]) / "cube.glb", assets / "cube.glb")
    (assets / "wreck.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage, not a binary glTF")
    shutil.copy(Path(paths["latents"]) / "cube.pt", latents / "cube.pt")
    shutil.copy(Path(paths["latents"]) / "cube.pt", latents / "wreck.pt")
    captions = root / "captions.csv"
    captions.write_text("uid,caption\ncube,a red cube\nwreck,a broken thing\n")
    return {**paths, "root": root, "cache": cache, "assets": assets, "latents": latents, "captions": captions}


def _env(tiny):
    env = dict(os.environ, HF_HUB_OFFLINE="1", SHARPIT_CACHE=str(tiny["cache"]), OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _args(tiny, out, *extra, metrics="fid,psnr,ssim,geometry"):
    return ["--tiny", "--assets", str(tiny["assets"]), "--latents", str(tiny["latents"]), "--captions",
            str(tiny["captions"]), "--methods", "shap_e", "--metrics", metrics, "--points", "500", "--device", "cpu",
            "--out", str(out), *extra]


def test_two_processes_split_the_assets_log_the_broken_one_and_resume(tiny, torchrun, monkeypatch, capsys):
    out = tiny["root"] / "run"
    cmd = [*torchrun(2), "-m", "inference.evaluate", *_args(tiny, out)]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(tiny), capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]                  # rank 1's broken asset: exit 4 there
    assert (out / "results.jsonl").is_file(), log[-6000:]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["asset"], r["method"], r["rank"]) for r in results] == [("cube", "shap_e", 0)]
    r = results[0]
    assert len(r["psnr_per_view"]) == 6 and 0 < r["ssim"] <= 1 and r["chamfer"] > 0 and r["seconds"] > 0
    assert (out / r["features"]).is_file() and (out / "features" / "cube" / "ground_truth.safetensors").is_file()
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["asset"], f["rank"]) for f in failures] == [("wreck", 1)]
    # one line about it, no traceback from our code (torchrun prints its own ChildFailedError report)
    assert "FAILED wreck: CorruptFileError" in log and not re.search(r'File "[^"]*/(sharpit|inference)/', log)
    # the report: the paper's numbers beside ours, plots, an offline gallery with relative links
    table = (out / "table.md").read_text()
    assert "A `--tiny` run: random tiny models" in table
    assert "| Sharp-It | 6.60 |" in table and re.search(r"\| Shap-E \(coarse\) \| - \| \d+\.\d\d \|", table), table
    for name in ("distributions.png", "time_vs_quality.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "index.html").read_text()
    links = re.findall(r'src="([^"]+)"', page)
    assert links and all(not link.startswith(("/", "http")) and (out / link).is_file() for link in links)
    assert {Path(link).name for link in links} == {"coarse.png", "shap_e.png", "ground_truth.png"}

    # resume in-process: the finished pair is skipped, the broken asset retried (and logged again;
    # no model loads for it: its mesh fails first)
    from inference.evaluate import main

    monkeypatch.setenv("SHARPIT_CACHE", str(tiny["cache"]))
    assert main(_args(tiny, out)) == 4
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    assert len((out / "failures.jsonl").read_text().splitlines()) == 2
    # another configuration in the same folder is refused before anything runs
    capsys.readouterr()
    assert main(_args(tiny, out, "--seed", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed 0 (now 3)" in err[0]


class _WrongSize:
    """A method runner whose grid has another tile size than the ground truth."""

    base = type("B", (), {"coarse": type("C", (), {"latent_width": None})()})()

    def run(self, spec, latent, caption, seed, device):
        return MethodOutput(torch.zeros(3, 96, 64), None)


def test_a_method_grid_of_another_size_is_logged_not_measured(tiny, tmp_path, monkeypatch):
    import sharpit.coarse

    monkeypatch.setattr(sharpit.coarse, "load_latents", lambda path, width=None: (torch.zeros(1, 8), None))
    asset = EvalAsset("cube", tiny["assets"] / "cube.glb", tiny["latents"] / "cube.pt", "a red cube")
    written, failed = evaluate_asset(asset, [MethodSpec("shap_e", "shap_e")], _WrongSize(), None, tmp_path, 0, "cpu")
    assert (written, failed) == (0, 1)
    line = json.loads((tmp_path / "failures.jsonl").read_text())
    assert line["method"] == "shap_e" and "(3, 96, 64) grid but the ground truth is (3, 960, 640)" in line["message"]
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.parametrize("extra,needle", [
    (("--methods", "shap_e,dreamfusion"), "unknown method 'dreamfusion'"),
    (("--metrics", "clip,inception"), "unknown metric 'inception'"),
    (("--lpips-weights", "{root}"), "cannot be combined with --lpips-weights"),
    (("--captions", "{root}/short.csv"), "no caption for 1 of 2 asset(s) (e.g. wreck)"),
    (("--assets", "{root}/twice.txt"), "have the same object id 'cube'"),
])
def test_bad_input_is_one_line_before_anything_loads(tiny, extra, needle, capsys):
    from inference.evaluate import main

    (tiny["root"] / "short.csv").write_text("uid,caption\ncube,a red cube\n")
    (tiny["root"] / "twice.txt").write_text("assets/cube.glb\nassets/wreck.glb\nother/cube.obj\n")
    argv = _args(tiny, tiny["root"] / "bad-run") + [e.format(root=tiny["root"]) for e in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tiny["root"] / "bad-run").exists()


def test_every_method_and_saved_folders_with_a_cheap_metric_set(tiny, tmp_path, monkeypatch):
    """shap_e, zero123plus_sdedit, sharpit and two ``folder:`` methods (a saved
    SharpItRefinePipeline and a saved SharpIt3DPipeline) run on one asset with every metric but
    FID: each has its grid, its metric values (geometry measured on its mesh) and its table rows."""
    from inference.evaluate import main
    from sharpit.pipeline import SharpIt3DPipeline
    from sharpit.testing.refine import save_tiny_sharpit_pipeline

    monkeypatch.setenv("SHARPIT_CACHE", str(tiny["cache"]))
    refiner = save_tiny_sharpit_pipeline(tmp_path / "my-refiner")
    SharpIt3DPipeline.from_tiny(tiny["cache"] / "tiny-models").save_pretrained(tmp_path / "my-pipeline")
    out = tmp_path / "run"
    methods = f"shap_e,zero123plus_sdedit,sharpit,folder:{refiner},folder:{tmp_path / 'my-pipeline'}"
    argv = ["--tiny", "--assets", str(tiny["assets"] / "cube.glb"), "--latents", str(tiny["latents"]), "--captions",
            str(tiny["captions"]), "--methods", methods, "--metrics", "clip,dino,psnr,ssim,lpips,geometry",
            "--points", "500", "--device", "cpu", "--out", str(out)]
    (tmp_path / "list.txt").write_text(f"{tiny['assets'] / 'cube.glb'}\n")
    argv[argv.index("--assets") + 1] = str(tmp_path / "list.txt")
    assert main(argv) == 0
    results = {r["method"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    keys = {"shap_e": "shap_e", "zero123plus_sdedit": "zero123plus_sdedit", "sharpit": "sharpit",
            f"folder:{refiner}": "folder_my_refiner", f"folder:{tmp_path / 'my-pipeline'}": "folder_my_pipeline"}
    assert set(results) == set(keys)
    for method, key in keys.items():
        r = results[method]
        assert r["method_key"] == key and (out / r["grid"]).read_bytes()[:4] == b"\x89PNG"
        assert all(-1 <= v <= 1 for v in r["clip_per_view"] + r["dino_per_view"]) and len(r["lpips_per_view"]) == 6
        assert r["lpips"] > 0 and 0 < r["ssim"] < 1 and 0 < r["psnr"] < 60
        assert 0 < r["chamfer"] < 1 and 0 <= r["fscore"] <= 1 and r["seconds"] > 0
        assert "fid" not in r and "features" not in r
    assert not (out / "features").exists()
    # the refined meshes are the reconstructor's, not the coarse STF mesh
    assert results["sharpit"]["chamfer"] != results["shap_e"]["chamfer"]
    table = (out / "table.md").read_text()
    for row in ("| Sharp-It | 6.60 | - | - | 0.90 | 0.", "| Zero123++ + SDEdit | 19.13 | - | - | 0.87 | 0.",
                "| Shap-E (coarse) | - | - | - | - | 0.", f"| folder:{refiner} | - | - | - | - | 0."):
        assert row in table, table
    for method in keys:
        assert re.search(rf"\| {re.escape(method)} \| 1 \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \|", table), method
    page = (out / "index.html").read_text()
    assert {Path(link).name for link in re.findall(r'src="([^"]+)"', page)} == \
        {"coarse.png", "ground_truth.png", *(f"{k}.png" for k in keys.values())}
    # the same command again: every pair is done, nothing runs or loads, nothing is appended
    from sharpit.evaluation import run

    monkeypatch.setattr(run, "evaluate_asset", None)
    assert main(argv) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == len(keys)


def test_missing_extractor_weights_exit_3_naming_the_flags(tiny, tmp_path, monkeypatch, capsys):
    """Without --tiny: weights absent from their default places (an empty torch hub cache, the hub
    offline) stop the run before anything loads with exit 3 and one line naming each flag that
    takes a local path; a given path that does not exist is exit 2 naming its flag."""
    from inference.evaluate import main
    from sharpit.testing.pipeline import save_tiny_models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("sharpit.evaluation.lpips.bundled_linear_path", lambda net: None)   # lpips not installed
    models = save_tiny_models(tiny["cache"] / "tiny-models")
    base = [a for a in _args(tiny, tmp_path / "run", metrics="fid") if a != "--tiny"] + [
        "--shap-e", models["shap_e"], "--zero123plus", models["zero123plus"], "--sharpit-unet", models["sharpit_unet"],
        "--instantmesh", models["instantmesh"]]
    for metrics, flags, code in (("fid", ["--inception-weights"], 3), ("lpips", ["--lpips-weights"], 3),
                                 ("fid,clip,lpips", ["--inception-weights", "--clip", "--lpips-weights"], 3)):
        argv = base + ["--metrics", metrics, "--clip", "nobody/no-such-clip"]
        assert main(argv) == code, metrics
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 2 and err[1].startswith("To try the whole chain offline"), err
        assert all(flag in err[0] for flag in flags), err[0]
    for metric, flag in (("fid", "--inception-weights"), ("lpips", "--lpips-weights")):
        assert main(base + ["--metrics", metric, flag, str(tmp_path / "nowhere")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and "no such" in err[0], err
    assert not (tmp_path / "run").exists()


def test_fid_without_torch_fidelity_is_one_line_before_anything_loads(tiny, tmp_path, monkeypatch, capsys):
    import importlib.util

    from inference.evaluate import main

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch_fidelity" else find_spec(name, *a))
    monkeypatch.setenv("SHARPIT_CACHE", str(tiny["cache"]))
    assert main(_args(tiny, tmp_path / "run", metrics="fid,psnr")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install --no-deps 'torch-fidelity>=0.3'" in err[0], err
    assert not (tmp_path / "run").exists()
    assert main(_args(tiny, tmp_path / "run", metrics="psnr")) == 4   # without fid it runs (the wreck fails)
    assert (tmp_path / "run" / "results.jsonl").is_file()


class _OneFailsOneWorks:
    """``broken`` raises a RuntimeError (as a CUDA out-of-memory error would); ``works`` returns a
    full-size grid whose measurement says CUDA memory."""

    base = _WrongSize.base

    def run(self, spec, latent, caption, seed, device):
        if spec.name == "broken":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return MethodOutput(torch.full((3, 960, 640), 0.5), None, 1.0, 123, "cuda_max_allocated")


class _SlowReference:
    """A CLIP stand-in whose first call (the ground truth's embeddings) takes 0.3 s."""

    calls = 0

    def embed(self, views):
        import time

        if not self.calls:
            time.sleep(0.3)
        self.calls += 1
        return views.flatten(1)[:, :8] + 1.0


def test_a_pair_error_is_logged_and_skipped_and_ground_truth_time_is_its_own(tmp_path, monkeypatch):
    """Any exception of one pair (here a RuntimeError) is logged and the next method still runs;
    the ground truth's features are timed once as ground_truth_seconds, not in the first method's
    metrics_seconds; memory_kind is the measurement's."""
    import sharpit.coarse
    import training.renderers
    from sharpit.evaluation.run import Extractors

    monkeypatch.setattr(sharpit.coarse, "load_latents", lambda path, width=None: (torch.zeros(1, 8), None))
    monkeypatch.setattr(training.renderers, "SharpItTargetRenderer",
                        lambda *a: lambda mesh, size, name: torch.full((3, 3 * size, 2 * size), 0.25))
    asset = EvalAsset("cube", tmp_path / "cube.glb", tmp_path / "cube.pt", "a red cube")
    specs = [MethodSpec("broken", "broken"), MethodSpec("works", "works")]
    written, failed = evaluate_asset(asset, specs, _OneFailsOneWorks(), Extractors(("clip",), clip=_SlowReference()),
                                     tmp_path, 0, "cpu", gt_mesh=object())
    assert (written, failed) == (1, 1)
    failure = json.loads((tmp_path / "failures.jsonl").read_text())
    assert failure["method"] == "broken" and failure["error"] == "RuntimeError" and "out of memory" in failure["message"]
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert record["method"] == "works" and record["clip"] == pytest.approx(1.0)
    assert record["ground_truth_seconds"] >= 0.3 > record["metrics_seconds"]
    assert record["memory_kind"] == "cuda_max_allocated"   # the method's measurement, not re-derived from the device


def test_a_load_failure_in_any_process_stops_every_process_before_the_loop(tiny, tmp_path, monkeypatch):
    """Here (one process) a RuntimeError while loading is one SharpItError line; with another
    process reporting a load failure (its report injected as torch.distributed would gather it),
    this process stops too, before evaluating anything, instead of waiting for it at the end."""
    from sharpit.errors import SharpItError
    from sharpit.evaluation import run

    monkeypatch.setattr(run, "evaluate_asset", None)   # nothing may be evaluated
    asset = EvalAsset("cube", tiny["assets"] / "cube.glb", tiny["latents"] / "cube.pt", "a red cube")

    def fail(device):
        raise RuntimeError("CUDA out of memory. Tried to allocate 9.00 GiB\nmore lines")

    plan = run.RunPlan([asset], [MethodSpec("shap_e", "shap_e")], tmp_path / "one", 0, "cpu", fail, lambda d: None)
    with pytest.raises(SharpItError, match=r"^loading the models and metric extractors failed: RuntimeError: CUDA "
                                           r"out of memory. Tried to allocate 9.00 GiB$"):
        run.evaluate(plan)

    def other_process_fails(device):   # this process loads; process 1 reports a failure
        import torch.distributed as dist

        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda: 2)
        monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(
            slice(None), [obj, "WeightsNotFoundError: could not load weights 'x'"]))
        return object()

    plan = run.RunPlan([asset], [MethodSpec("shap_e", "shap_e")], tmp_path / "two", 0, "cpu", other_process_fails,
                       lambda d: None)
    with pytest.raises(SharpItError, match=r"^process 1 could not load the models and metric extractors "
                                           r"\(WeightsNotFoundError: could not load weights 'x'\), so every process"):
        run.evaluate(plan)
    assert not (tmp_path / "two" / "failures.jsonl").exists()
