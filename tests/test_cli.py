"""The command lines: smoke runs, batches across processes, resume, and error exits."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sharpit.mesh_io import save_mesh
from sharpit.testing.meshes import colored_cube

REPO = Path(__file__).resolve().parents[1]
EDIT_FAST = ["--tiny", "--refine-steps", "2", "--coarse-grid-size", "24", "--mesh-resolution", "32"]
FAST = EDIT_FAST + ["--coarse-steps", "2"]


def _env(tmp_path):
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", SHARPIT_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1")
    return env


def run(args, tmp_path, module="inference.generate", timeout=300):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout)


def assert_clean_error(proc, code, *needles):
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "does not look white" not in proc.stderr and "Retrying" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def run_script(script, args, tmp_path, timeout=300):
    """An installed console script (``.venv/bin/sharpit-generate``), run from ``tmp_path``, not the repo."""
    exe = Path(sys.executable).parent / script
    return subprocess.run([str(exe), *args], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def test_generate_tiny_smoke(tmp_path):
    out = tmp_path / "chair"
    proc = run_script("sharpit-generate", ["--prompt", "a chair", "--out", "chair", *FAST], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "mesh.glb").stat().st_size > 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["prompt"] == "a chair"
    assert meta["parameters"]["coarse_render"] == {"mode": "mesh", "supersample": 2}  # the shared default
    again = run(["--prompt", "a chair", "--out", str(out), *FAST], tmp_path)
    assert_clean_error(again, 2, "already holds", "--overwrite")


def test_edit_tiny_smoke(tmp_path):
    asset = tmp_path / "cube.obj"
    save_mesh(colored_cube(), asset)
    out = tmp_path / "edited"
    proc = run(["--asset", str(asset), "--prompt", "a golden cube", "--out", str(out), *EDIT_FAST, "--textured"],
               tmp_path, module="inference.edit")
    assert proc.returncode == 0, proc.stderr
    assert (out / "mesh.glb").is_file()
    assert json.loads((out / "metadata.json").read_text())["mesh"]["textured"] is True


def test_cli_errors(tmp_path):
    assert_clean_error(run(["--asset", str(tmp_path / "nope.glb"), "--prompt", "x", "--out", str(tmp_path / "o"),
                            "--tiny"], tmp_path, module="inference.edit"), 2, "nope.glb", "not found")
    bad = tmp_path / "model.xyz"
    bad.write_text("solid")
    assert_clean_error(run(["--asset", str(bad), "--prompt", "x", "--out", str(tmp_path / "o"), "--tiny"],
                           tmp_path, module="inference.edit"), 2, "model.xyz")
    empty = tmp_path / "prompts.txt"
    empty.write_text("\n# only a comment\n\n")
    assert_clean_error(run(["--prompts", str(empty), "--out", str(tmp_path / "o"), "--tiny"], tmp_path),
                       2, "no prompts")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert_clean_error(run(["--prompt", "a chair", "--out", str(blocker / "sub"), *FAST], tmp_path),
                       2, "a_file")
    assert_clean_error(run(["--prompt", "  ", "--out", str(tmp_path / "o"), "--tiny"], tmp_path), 2, "empty")


def test_bad_coarse_render_flags_fail_before_loading_models(tmp_path, capsys):
    from inference import edit, generate

    assert generate.main(["--prompt", "a chair", "--out", str(tmp_path / "o"), "--coarse-supersample", "0"]) == 2
    err = capsys.readouterr().err
    assert "supersample" in err and ">= 1" in err and len(err.splitlines()) == 1
    mesh = tmp_path / "cube.obj"
    save_mesh(colored_cube(), mesh)
    assert edit.main(["--asset", str(mesh), "--prompt", "x", "--out", str(tmp_path / "o"),
                      "--coarse-render-mode", "nerf"]) == 2
    err = capsys.readouterr().err
    assert "'nerf'" in err and "mesh asset" in err and "--coarse-render-mode mesh" in err
    assert not (tmp_path / "o").exists()


def test_missing_weights_offline_exit_code(tmp_path):
    proc = run(["--prompt", "a chair", "--out", str(tmp_path / "o"), "--shap-e", "nobody/missing-shap-e"],
               tmp_path)
    assert_clean_error(proc, 3, "nobody/missing-shap-e", "--tiny")


def _torchrun(torchrun, args, tmp_path):
    cmd = [*torchrun(2), "-m", "inference.generate", *args]
    return subprocess.run(cmd, cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=600)


def test_batch_across_two_processes_and_resume(tmp_path, torchrun):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a chair\na table\n# skipped comment\na lamp\na vase\n")
    out = tmp_path / "batch"
    proc = _torchrun(torchrun, ["--prompts", str(prompts), "--out", str(out), *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folders = sorted(p.name for p in out.iterdir())
    assert folders == ["00000_a_chair", "00001_a_table", "00002_a_lamp", "00003_a_vase"]
    done_lines = [line for line in proc.stdout.splitlines() if "->" in line]
    assert len(done_lines) == 4, proc.stdout  # each item ran exactly once across the two ranks
    ranks = {line.split("]")[0] for line in done_lines}
    assert ranks == {"[rank 0", "[rank 1"}

    # Simulate an interruption: item 2 was never finished and left a half-written folder.
    finished = {p: (out / p / "metadata.json").stat().st_mtime_ns for p in folders}
    import shutil

    shutil.rmtree(out / "00002_a_lamp")
    partial = out / ".00002_a_lamp.abc123.partial"
    partial.mkdir()
    (partial / "mesh.glb").write_bytes(b"half")
    proc = _torchrun(torchrun, ["--prompts", str(prompts), "--out", str(out), *FAST], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not partial.exists()
    assert (out / "00002_a_lamp" / "metadata.json").is_file()
    for p in folders:
        if p != "00002_a_lamp":
            assert (out / p / "metadata.json").stat().st_mtime_ns == finished[p]
    assert proc.stdout.count("skip (done)") == 3


@pytest.mark.parametrize("script", ["sharpit-generate", "sharpit-edit", "sharpit-prepare-pairs",
                                    "sharpit-precompute-latents", "sharpit-train"])
def test_console_scripts_work_from_any_folder(script, tmp_path):
    proc = run_script(script, ["--help"], tmp_path, timeout=120)
    assert proc.returncode == 0 and "usage" in proc.stdout.lower(), proc.stderr


def test_bad_output_locations_fail_at_once(tmp_path, capsys):
    from inference import generate

    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("keep me")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, needle in [("/proc/sharpit-test/out", "--out cannot be written"), (str(a_file), "--out is a file"),
                        (str(a_file / "sub"), "is a file, not a folder"), (str(full), "--overwrite")]:
        assert generate.main(["--prompt", "a chair", "--out", out, "--tiny"]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.splitlines()) == 1, err
    assert (full / "mine.txt").read_text() == "keep me"


def test_offline_missing_weights_fail_fast_naming_every_flag(tmp_path):
    start = time.perf_counter()
    proc = run(["--prompt", "a chair", "--out", str(tmp_path / "o"), "--shap-e", "nobody/missing-shap-e",
                "--zero123plus", "nobody/missing-base"], tmp_path)
    assert time.perf_counter() - start < 10          # no hub retries (about 1 s here, most of it Python start-up)
    assert_clean_error(proc, 3, "--shap-e DIR for nobody/missing-shap-e", "--zero123plus DIR for nobody/missing-base",
                       "--sharpit-unet DIR", "--instantmesh DIR", "--tiny")
    local = run(["--prompt", "a chair", "--out", str(tmp_path / "o"), "--instantmesh", str(tmp_path / "no.ckpt")],
                tmp_path)
    assert_clean_error(local, 2, "--instantmesh", "no.ckpt")


def test_edit_up_axis_flag(tmp_path, capsys):
    from inference import edit

    glb = tmp_path / "cube.glb"
    save_mesh(colored_cube(), glb)
    assert edit.main(["--asset", str(glb), "--prompt", "x", "--out", str(tmp_path / "o"), "--up-axis", "z"]) == 2
    assert "--up-axis z does not apply to glTF" in capsys.readouterr().err


def test_batch_goes_on_past_a_failing_item_and_redoes_only_what_changed(tmp_path, monkeypatch, capsys):
    from inference import generate
    from sharpit import EmptySurfaceError
    from sharpit.pipeline import SharpIt3DPipeline

    monkeypatch.setenv("SHARPIT_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a chair\nnothing at all\na lamp\n")
    out = tmp_path / "batch"
    real = SharpIt3DPipeline.generate

    def flaky(self, prompt, **kwargs):
        if prompt == "nothing at all":
            raise EmptySurfaceError("no surface at the requested level")
        return real(self, prompt, **kwargs)

    monkeypatch.setattr(SharpIt3DPipeline, "generate", flaky)
    args = ["--prompts", str(prompts), "--out", str(out), *FAST]
    assert generate.main(args) == 4
    err = capsys.readouterr().err
    assert "1 of 3 item(s) failed" in err and "failures.jsonl" in err
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [(f["index"], f["error"]) for f in failures] == [(1, "EmptySurfaceError")]
    assert "no surface" in failures[0]["message"]
    done = {p.name: (p / "metadata.json").stat().st_mtime_ns for p in out.iterdir() if p.is_dir()}
    assert sorted(done) == ["00000_a_chair", "00002_a_lamp"]

    monkeypatch.setattr(SharpIt3DPipeline, "generate", real)   # the retry succeeds; finished items are kept
    assert generate.main(args) == 0
    assert capsys.readouterr().out.count("skip (done)") == 2
    assert (out / "00001_nothing_at_all" / "metadata.json").is_file()
    for name, mtime in done.items():
        assert (out / name / "metadata.json").stat().st_mtime_ns == mtime

    changed = args + ["--mesh-resolution", "48"]   # the last value of a flag wins
    assert generate.main(changed) == 2
    err = capsys.readouterr().err
    assert "mesh_resolution 32 (now 48)" in err and "--overwrite" in err and len(err.splitlines()) == 1


def test_edit_in_latent_space_with_texture_optimisation(tmp_path):
    """The issue-11 and issue-18 flags end to end: encode (tiny encoder), DDPM-inversion edit from a
    source prompt, refine, reconstruct, one optimisation step; the state file is gone once saved."""
    asset = tmp_path / "cube.obj"
    save_mesh(colored_cube(), asset)
    out = tmp_path / "edited"
    proc = run(["--asset", str(asset), "--prompt", "a golden cube", "--out", str(out), *EDIT_FAST,
                "--source-prompt", "a cube", "--latent-strength", "0.5", "--optimize-steps", "1",
                "--texture-size", "64", "--face-budget", "300"], tmp_path, module="inference.edit")
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "metadata.json").read_text())
    params = meta["parameters"]
    assert params["via"] == "latent" and params["source_prompt"] == "a cube" and params["latent_strength"] == 0.5
    assert params["optimize_steps"] == 1 and meta["mesh"]["textured"] is True
    assert {"encode", "invert", "optimize"} <= set(meta["timings_s"])
    assert (out / "latent.safetensors").is_file()
    assert not list(tmp_path.glob(".edited.optimize-state*"))


def test_edit_route_reads_a_saved_pipelines_components(tmp_path):
    """--via's default and its checks follow what a --pipeline folder was saved with, as
    SharpIt3DPipeline.edit decides at run time: an encoder without Shap-E cannot take the latent route."""
    import argparse

    from inference.edit import route
    from sharpit.errors import InputError

    folder = tmp_path / "saved"
    folder.mkdir()

    def args(via=None, prior=True, encoder=True):
        index = {"prior": ["diffusers", "PriorTransformer"] if prior else [None, None],
                 "shap_e_encoder": ["sharpit", "ShapEEncoder"] if encoder else [None, None]}
        (folder / "model_index.json").write_text(json.dumps(index))
        return argparse.Namespace(tiny=False, pipeline=str(folder), encoder=None, via=via, asset="a.glb")

    assert route(args(), is_latent=False) == "latent"
    assert route(args(encoder=False), is_latent=False) == "render"
    assert route(args(prior=False), is_latent=False) == "render"
    with pytest.raises(InputError, match="saved without"):
        route(args("latent", prior=False), is_latent=False)
    with pytest.raises(InputError, match="--encoder DIR"):
        route(args("latent", encoder=False), is_latent=False)


def test_encoder_source_check_takes_the_released_file_with_its_config_beside_it(tmp_path):
    """--encoder accepts what ShapEEncoder.from_pretrained reads, including the released .pt file itself."""
    import shutil

    from sharpit.checks import check_encoder_source
    from sharpit.errors import CheckpointError
    from sharpit.testing.shap_e_encoder import save_tiny_shap_e_encoder

    folder = save_tiny_shap_e_encoder(tmp_path / "transmitter")
    assert check_encoder_source(folder) is False
    assert check_encoder_source(folder / "transmitter.pt") is False
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / "transmitter.pt", alone / "transmitter.pt")
    with pytest.raises(CheckpointError, match="transmitter_config.yaml beside it"):
        check_encoder_source(alone / "transmitter.pt")
