"""The web app's handlers (inference/app.py), called directly with the tiny pipeline: outputs,
stage progress, cancelling, every kind of bad input, sessions and files, the page's wiring, and
the command line's flag checks. The real-browser test is tests/test_app_browser.py."""

import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gradio")

from inference import app as webapp  # noqa: E402
from sharpit.errors import SharpItError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "examples" / "assets"
#: Small settings: each run takes a few seconds on 2 CPU cores.
SMALL = dict(coarse_steps=2, refine_steps=2, mesh_resolution=32, coarse_grid_size=24, texture_size=64,
             face_budget=500)


class Progress:
    """Records what a gr.Progress would show; ``on(text)`` may act on a report."""

    def __init__(self, on=None):
        self.events, self.on = [], on

    def __call__(self, fraction, desc=None):
        self.events.append((fraction, desc))
        if self.on is not None:
            self.on(desc)

    @property
    def texts(self):
        return [d for _, d in self.events]


@pytest.fixture(scope="module")
def pipe():
    from sharpit import SharpIt3DPipeline

    pipe = SharpIt3DPipeline.from_tiny()
    pipe.set_progress_bar_config(disable=True)
    pipe.set_default_options(**SMALL)   # the app reads its defaults from here
    return pipe


@pytest.fixture(scope="module")
def app(pipe, tmp_path_factory):
    app = webapp.SharpItApp(pipe, root=tmp_path_factory.mktemp("app-root"),
                            out_dir=tmp_path_factory.mktemp("app-out"))
    yield app
    app.close()
    assert not app.root.exists()


@pytest.fixture(scope="module")
def generated(app):
    progress = Progress()
    out = app.generate("a red chair", 0, {}, session="gen", progress=progress)
    return out, progress


def _names(out):
    return [Path(f).name for f in out.files]


# -- results -----------------------------------------------------------------------------------
def test_generate_writes_the_viewer_glb_grids_and_downloads(app, pipe, generated, gltf_validate):
    out, progress = generated
    assert _names(out) == ["mesh.glb", "mesh.obj", "mesh.ply", "coarse_grid.png", "refined_grid.png",
                           "metadata.json"]
    assert out.model == out.files[0] and out.model.endswith(".glb")
    for f in out.files:   # every file in the session's folder inside the app's temporary root
        assert Path(f).is_file() and Path(f).is_relative_to(app.root / "sessions" / "gen")
    report = gltf_validate(out.model)
    assert report["numErrors"] == 0, report["messages"]
    from PIL import Image

    assert Image.open(out.coarse_grid).size == Image.open(out.refined_grid).size == (640, 960)
    # The options are the pipeline's defaults (the UI reads them from pipe.default_options).
    params = out.result.parameters
    assert params["refine_steps"] == SMALL["refine_steps"] and params["coarse_steps"] == SMALL["coarse_steps"]
    assert "seed **0**" in out.status and "Done" in out.status
    # --out: a full result folder as well.
    saved = [p for p in app.out_dir.iterdir() if p.is_dir()]
    assert any((p / "metadata.json").is_file() and (p / "mesh.glb").is_file() for p in saved)


def test_progress_names_every_stage_in_order(generated):
    _, progress = generated
    texts = progress.texts
    firsts = [next(i for i, t in enumerate(texts) if t.startswith(prefix))
              for prefix in ("1/4 Coarse shape (Shap-E)", "2/4 Coarse mesh", "3/4 Refining the six views: step 1/2",
                             "4/4 Reconstructing the mesh", "Saving")]
    assert firsts == sorted(firsts)
    assert "1/4 Coarse shape (Shap-E): step 1/2" in texts
    fractions = [f for f, _ in progress.events]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0] and fractions[-1] <= 1.0


def test_the_page_gets_the_glb_first_then_the_rest(app):
    stream = app.generate_stream("a blue vase", 3, {}, session="stream")
    first = next(stream)
    assert first.model.endswith("mesh.glb") and Path(first.model).is_file()
    assert first.values()[1:4] == (webapp.gr.skip(),) * 3   # grids and downloads follow
    final = next(stream)
    assert final.model == first.model and len(final.files) == 6
    assert set(app.timeline) == {"handler", "pipeline_start", "pipeline_end", "view", "outputs"}


def test_edit_mesh_keeps_its_frame_and_zips_a_textured_obj(app):
    from sharpit.mesh_io import load_mesh

    progress = Progress()
    out = app.edit(str(ASSETS / "rough_table.obj"), "a marble table", 1, "y",
                   {"strength": 0.5, "textured": True}, session="edit", progress=progress)
    assert progress.texts[0] == ("1/3 Reading the asset, encoding it into Shap-E's latent, decoding it and rendering "
                                 "its six views")
    # strength 0.5 of 2 refiner steps: one step, whose end starts the reconstruction
    assert progress.texts[1:] == ["3/3 Reconstructing the mesh and texture", "Saving the mesh"]
    assert _names(out) == ["mesh.glb", "mesh_obj.zip", "coarse_grid.png", "refined_grid.png", "metadata.json"]
    assert "PLY skipped" in out.status and "own frame and size" in out.status and "y-up" in out.status
    with zipfile.ZipFile(Path(out.folder) / "mesh_obj.zip") as zf:
        assert sorted(zf.namelist()) == ["mesh.mtl", "mesh.obj", "mesh.png"]
    # The tiny pipeline has Shap-E's encoder, so the asset went through the latent route; the coarse
    # object (the decoded latent) is back in the asset's own frame and size.
    asset = load_mesh(ASSETS / "rough_table.obj", up_axis="y")
    assert out.result.parameters["via"] == "latent"
    (lo, hi), (clo, chi) = asset.bounds(), out.result.coarse_mesh.bounds()
    radius = float((hi - lo).norm()) / 2
    assert float(((clo + chi) / 2 - (lo + hi) / 2).norm()) < 0.5 * radius
    assert 0.2 * radius < float((chi - clo).norm()) / 2 < 2.0 * radius
    assert out.result.mesh.has_texture and out.result.parameters["strength"] == 0.5


def test_edit_a_saved_latent(app, generated, tmp_path):
    from sharpit.coarse import save_latents

    latent = generated[0].result.latent
    path = save_latents(tmp_path / "chair.safetensors", latent, {"prompt": "a red chair"})
    progress = Progress()
    out = app.edit(str(path), "a blue chair", 2, "auto", {}, session="latent", progress=progress)
    assert Path(out.model).is_file() and out.result.latent is not None
    assert progress.texts[0] == "1/3 Reading the latent, decoding it and rendering its six views"
    with pytest.raises(SharpItError, match="chair.safetensors is a Shap-E latent: Route render applies to meshes"):
        app.edit(str(path), "a blue chair", 2, "auto", {}, "render", session="latent")


def test_edit_with_a_source_prompt_edits_the_latent_and_shows_its_steps(app):
    progress = Progress()
    out = app.edit(str(ASSETS / "rough_chair.glb"), "an armchair", 1, "auto",
                   {"inversion_steps": 4, "latent_strength": 0.5, "latent_guidance_scale": 3.0}, "latent",
                   "  a chair ", session="latent-edit", progress=progress)
    texts = progress.texts
    assert texts[0] == "1/5 Reading the asset and encoding it into Shap-E's latent"
    for expected in ("2/5 Inverting the latent (source prompt): step 4/4",
                     "3/5 Editing the latent toward the prompt: step 2/2", "4/5 Refining the six views: step 1/2",
                     "5/5 Reconstructing the mesh"):
        assert expected in texts, texts
    assert [f for f, _ in progress.events] == sorted(f for f, _ in progress.events)
    params = out.result.parameters
    assert params["via"] == "latent" and params["source_prompt"] == "a chair"
    assert (params["inversion_steps"], params["latent_strength"], params["latent_guidance_scale"]) == (4, 0.5, 3.0)


def test_a_latent_edit_that_regenerates_nothing_has_no_regeneration_stage(app):
    progress = Progress()
    app.edit(str(ASSETS / "rough_chair.glb"), "an armchair", 1, "auto", {"inversion_steps": 4, "latent_strength": 0.1},
             "latent", "a chair", session="latent-zero", progress=progress)   # int(4 * 0.1) = 0 steps
    texts = progress.texts
    assert "2/4 Inverting the latent (source prompt): step 4/4" in texts and texts[-2] == "4/4 Reconstructing the mesh"
    assert not any("Editing the latent" in t for t in texts)
    assert [f for f, _ in progress.events] == sorted(f for f, _ in progress.events)


def test_edit_through_the_render_route(app):
    progress = Progress()
    out = app.edit(str(ASSETS / "ball.ply"), "a stone ball", 0, "auto", {}, "render", "", session="render",
                   progress=progress)
    assert progress.texts[0] == "1/3 Reading the asset and rendering its six views"
    assert out.result.parameters["via"] == "render" and out.result.parameters["source_prompt"] is None
    assert out.result.parameters["latent_strength"] is None   # recorded only when it acted


def test_texture_optimisation_shows_its_steps_and_can_be_cancelled(app):
    progress = Progress()
    out = app.generate("a red chair", 0, {"optimize_steps": 2}, session="sds", progress=progress)
    assert "4/5 Reconstructing the mesh and texture" in progress.texts
    assert "5/5 Optimising the texture (multi-view SDS): step 2/2" in progress.texts
    assert out.result.parameters["optimize_steps"] == 2 and out.result.mesh.has_texture
    assert "optimize" in out.result.timings

    def cancel_at_first_step(text):
        if text.startswith("5/5 Optimising") and text.endswith("step 1/2"):
            app.cancel("sds-cancel")

    with pytest.raises(webapp.Cancelled, match="Optimising the texture"):
        app.generate("a red chair", 0, {"optimize_steps": 2}, session="sds-cancel",
                     progress=Progress(cancel_at_first_step))


@pytest.mark.parametrize("via, source, settings, message", [
    ("sideways", None, {}, "Route must be one of auto, latent, render, got 'sideways'"),
    ("render", "a chair", {}, "Source prompt edits the asset's Shap-E latent, which the render route skips"),
    ("auto", "a chair", {"latent_strength": 1.5}, "Latent edit strength must be"),
    ("auto", "a chair", {"inversion_steps": 1}, "Inversion steps must be an integer >= 2, got 1"),
])
def test_bad_latent_edit_input_is_one_readable_line(app, via, source, settings, message):
    chair = str(ASSETS / "rough_chair.glb")
    with pytest.raises(SharpItError, match=message):
        app.edit(chair, "an armchair", 0, "auto", settings, via, source, session="bad-latent")
    with pytest.raises(webapp.gr.Error) as caught:
        list(app._ui_stream(app.edit_stream, chair, "an armchair", 0, "auto", settings, via, source,
                            session="bad-latent"))
    assert "\n" not in caught.value.message and "Traceback" not in caught.value.message


def test_the_route_help_says_what_auto_means_for_the_loaded_models(pipe, tmp_path):
    from sharpit import SharpIt3DPipeline

    with_encoder = webapp.SharpItApp(pipe, root=tmp_path / "a")
    assert with_encoder._route_info().endswith("auto: latent for these models")
    without = webapp.SharpItApp(SharpIt3DPipeline(**{**pipe.components, "shap_e_encoder": None}), root=tmp_path / "b")
    assert "auto: render for these models (no Shap-E encoder loaded: start the app with --encoder DIR" in \
        without._route_info()
    with pytest.raises(SharpItError, match="this app was started without: restart it with --encoder DIR"):
        without.edit(str(ASSETS / "ball.ply"), "a stone ball", 0, "auto", {}, "latent")
    with pytest.raises(SharpItError, match="which the render route skips"):   # auto is render here
        without.edit(str(ASSETS / "ball.ply"), "a stone ball", 0, "auto", {}, "auto", "a ball")
    with_encoder.close()
    without.close()


# -- cancelling --------------------------------------------------------------------------------
def test_cancel_during_refine_then_the_next_request_matches_an_uncancelled_one(app, generated):
    first, _ = generated

    def cancel_at_refine(text):
        if text.startswith("3/4"):
            assert app.cancel("c1") == "Cancelling…"

    with pytest.raises(webapp.Cancelled, match="Refining the six views: step 1/2"):
        app.generate("a red chair", 0, {}, session="c1", progress=Progress(cancel_at_refine))
    assert not app.pipe.prior._forward_pre_hooks   # the progress hook is gone
    again = app.generate("a red chair", 0, {}, session="c1")
    assert np.array_equal(np.asarray(again.result.refined_grid), np.asarray(first.result.refined_grid))
    assert torch.equal(again.result.mesh.vertices, first.result.mesh.vertices)


def test_cancel_from_another_thread_stops_shap_e(app):
    reached, go, outcome = threading.Event(), threading.Event(), {}

    def hold(text):
        if text.startswith("1/4") and not reached.is_set():
            reached.set()
            go.wait(60)

    def run():
        try:
            app.generate("a lamp", 0, {}, session="c2", progress=Progress(hold))
        except BaseException as exc:   # noqa: BLE001
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    assert reached.wait(60)
    assert app.cancel("c2") == "Cancelling…"
    go.set()
    worker.join(60)
    assert isinstance(outcome.get("error"), webapp.Cancelled)
    assert "Coarse shape (Shap-E)" in str(outcome["error"])
    assert app._lock.acquire(blocking=False)   # released for the next request
    app._lock.release()


def test_cancel_while_queued_never_starts_the_pipeline(app):
    token = app.arm("c3")
    assert app.cancel("c3") == "Cancelling…"
    with pytest.raises(webapp.Cancelled):
        app.generate("a lamp", 0, {}, session="c3", token=token)
    assert "pipeline_start" not in app.timeline
    assert app.cancel("c3") == "Nothing to cancel."


def test_the_page_shows_a_cancel_as_a_status_line(app):
    token = app.arm("c4")
    app.cancel("c4")
    values = list(app._ui_stream(app.generate_stream, "a lamp", 0, {}, session="c4", token=token))
    assert len(values) == 1 and values[0][:4] == (webapp.gr.skip(),) * 4
    assert values[0][4].startswith("Cancelled") and "Ready for the next request" in values[0][4]


# -- bad input ---------------------------------------------------------------------------------
def _file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


BAD_GENERATE = [
    ("", 0, {}, "Prompt is empty"),
    ("   ", 0, {}, "Prompt is empty"),
    (None, 0, {}, "Prompt is empty"),
    ("a chair", -1, {}, r"Seed must be a whole number in \[0, 4294967295\]"),
    ("a chair", 1.5, {}, "Seed must be a whole number"),
    ("a chair", 2 ** 40, {}, "Seed must be a whole number"),
    ("a chair", 0, {"refine_steps": 0}, "Refine steps must be an integer >= 1, got 0"),
    ("a chair", 0, {"coarse_steps": 2.5}, r"Coarse steps \(Shap-E\) must be an integer >= 1, got 2.5"),
    ("a chair", 0, {"guidance_scale": -1.0}, "Guidance scale must be a finite number >= 0.0, got -1.0"),
    ("a chair", 0, {"guidance_scale": float("nan")}, "Guidance scale must be a finite number"),
    ("a chair", 0, {"mesh_resolution": 4}, "Mesh resolution must be an integer >= 8, got 4"),
    ("a chair", 0, {"strength": 0.5}, "strength is not a setting of the generate tab"),
]


@pytest.mark.parametrize("prompt, seed, settings, message", BAD_GENERATE)
def test_bad_generate_input_is_one_readable_line(app, prompt, seed, settings, message):
    with pytest.raises(SharpItError, match=message):
        app.generate(prompt, seed, settings, session="bad")
    assert "pipeline_start" not in app.timeline   # refused before any model runs
    with pytest.raises(webapp.gr.Error) as caught:
        list(app._ui_stream(app.generate_stream, prompt, seed, settings, session="bad"))
    text = caught.value.message
    assert text.count("\n") == 0 and "Traceback" not in text and "\\" not in text


def _bad_edits(tmp_path):
    gltf = _file(tmp_path, "ok.gltf", b'{"asset": {"version": "2.0"}}')
    return [
        (None, "a chair", "auto", {}, "no asset: drop a mesh"),
        (_file(tmp_path, "empty.glb", b""), "a chair", "auto", {}, r"empty.glb: is empty \(0 bytes\)"),
        (_file(tmp_path, "broken.glb", b"glTF" + b"\x07garbage" * 64), "a chair", "auto", {}, "broken.glb"),
        (_file(tmp_path, "broken.ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 9\n\x00\x01"),
         "a chair", "auto", {}, "broken.ply"),
        (_file(tmp_path, "broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json"), "a chair", "auto", {},
         "broken.safetensors"),
        (_file(tmp_path, "chair.fbx", b"Kaydara FBX Binary"), "a chair", "auto", {}, r"chair.fbx: .fbx is not supported"),
        (_file(tmp_path, "chair", b"v 0 0 0"), "a chair", "auto", {}, "no extension is not supported"),
        (str(ASSETS / "rough_chair.glb"), "", "auto", {}, "Prompt is empty"),
        (str(ASSETS / "rough_chair.glb"), "a chair", "x", {}, "Up axis must be one of auto, y, z"),
        (gltf, "a chair", "z", {}, "up axis z does not apply to glTF"),
        (str(ASSETS / "rough_chair.glb"), "a chair", "auto", {"strength": 0.0},
         r"Strength must be a finite number in \(0.0, 1.0\], got 0.0"),
        (str(ASSETS / "rough_chair.glb"), "a chair", "auto", {"strength": 1.5}, "Strength must be a finite number"),
        (str(ASSETS / "rough_chair.glb"), "a chair", "auto", {"strength": 0.2, "refine_steps": 2},
         "leaves no refiner step"),
        (str(ASSETS / "rough_chair.glb"), "a chair", "auto", {"coarse_steps": 3},
         "coarse_steps is not a setting of the edit tab"),
    ]


def test_bad_edit_input_is_one_readable_line_naming_the_file(app, tmp_path):
    for upload, prompt, axis, settings, message in _bad_edits(tmp_path):
        with pytest.raises(SharpItError, match=message):
            app.edit(upload, prompt, 0, axis, settings, session="bad")
        with pytest.raises(webapp.gr.Error) as caught:
            list(app._ui_stream(app.edit_stream, upload, prompt, 0, axis, settings, session="bad"))
        text = caught.value.message
        assert "Traceback" not in text and str(tmp_path) not in text, text   # the name, not the temporary path


def test_upload_over_the_size_limit(pipe, tmp_path):
    small = webapp.SharpItApp(pipe, root=tmp_path / "root", max_upload_mb=0.001)
    big = _file(tmp_path, "big.glb", b"glTF" + bytes(2000))
    with pytest.raises(SharpItError, match=r"big.glb is 0.002 MB; the app takes files up to 0.001 MB"):
        small.edit(big, "a chair", 0, "auto", {})
    small.close()


def test_unexpected_errors_are_one_line_and_the_app_keeps_serving(app, monkeypatch, caplog):
    def explode(*args, **kwargs):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB\n  at frame 3")

    with monkeypatch.context() as m:
        m.setattr(app.pipe, "generate", explode)
        with pytest.raises(webapp.gr.Error) as caught:
            list(app._ui_stream(app.generate_stream, "a chair", 0, {}, session="boom"))
    assert caught.value.message.startswith("Something failed while making this result (RuntimeError: CUDA out of "
                                           "memory.)")
    assert "\n" not in caught.value.message and "request failed" in caplog.text   # the log has the traceback
    assert app._lock.acquire(blocking=False)
    app._lock.release()
    assert Path(app.generate("a chair", 5, {}, session="boom").model).is_file()


def test_two_sessions_never_run_the_pipeline_at_once(app, generated, monkeypatch):
    import time

    active, most = [0], [0]

    def slow_generate(prompt, **kwargs):
        active[0] += 1
        most[0] = max(most[0], active[0])
        time.sleep(0.3)
        active[0] -= 1
        return generated[0].result

    monkeypatch.setattr(app.pipe, "generate", slow_generate)
    errors = []

    def run(session):
        try:
            app.generate("a chair", 0, {}, session=session)
        except BaseException as exc:   # noqa: BLE001
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(f"user{i}",)) for i in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert not errors and most[0] == 1


# -- options, sessions, files ------------------------------------------------------------------
def test_options_come_from_the_pipeline_defaults(pipe):
    defaults = pipe.default_options
    assert webapp.options_from_ui(defaults, "generate", {}) == defaults
    opts = webapp.options_from_ui(defaults, "generate", {"refine_steps": 3.0, "negative_prompt": "  ",
                                                         "textured": True})
    assert opts.refine_steps == 3 and isinstance(opts.refine_steps, int)
    assert opts.negative_prompt is None and opts.textured is True
    assert webapp.options_from_ui(defaults, "edit", {"negative_prompt": "blurry"}).negative_prompt == "blurry"
    # Every control is a GenerationOptions field, on at least one tab.
    fields = set(defaults.to_dict())
    assert {c.option for c in webapp.CONTROLS} <= fields
    assert all(c.tabs for c in webapp.CONTROLS)


def test_sessions_have_their_own_folders_and_are_cleaned(pipe, tmp_path):
    app = webapp.SharpItApp(pipe, root=tmp_path / "root", file_max_age_s=60)
    a, b = app._session("a"), app._session("b")
    assert a.folder != b.folder and a.folder.parent == b.folder.parent == app.root / "sessions"
    for s in (a, b):
        for i in range(webapp.KEEP_RESULTS + 2):
            (s.folder / f"{i:04d}_generate_x").mkdir(parents=True)
    webapp.SharpItApp._prune(a)
    assert sorted(p.name for p in a.folder.iterdir())[0] == "0002_generate_x"
    assert len(list(a.folder.iterdir())) == webapp.KEEP_RESULTS
    app.end_session("a")   # the tab closed
    assert not a.folder.exists() and b.folder.exists()
    b.running = True       # a closed tab's running request deletes its files when it ends
    app.end_session("b")
    assert b.folder.exists() and b.closed
    b.running = False
    app._discard("b", b)
    assert not b.folder.exists()
    c = app._session("c")
    c.folder.mkdir(parents=True)
    app.sweep(now=c.last_used + 30)
    assert c.folder.exists()
    app.sweep(now=c.last_used + 61)   # idle for longer than file_max_age_s
    assert not c.folder.exists() and "c" not in app._sessions
    app.close()
    assert not app.root.exists()


def test_the_page_runs_one_request_at_a_time_and_reads_the_defaults(app, pipe, monkeypatch):
    import gradio as gr

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(app.root))   # build() sets it; undone after the test
    demo = app.build()
    fns = list(demo.fns.values())
    runs = [f for f in fns if f.name in ("run_generate", "run_edit")]
    # Generate (button, Enter, example) and Edit (button, example) share one slot of one.
    assert len(runs) == 5 and all(f.concurrency_id == "pipeline" and f.concurrency_limit == 1 for f in runs)
    assert all(not f.queue for f in fns if f.name in ("arm", "cancel"))   # never stuck behind a run
    sliders = {b.label: b.value for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    defaults = pipe.default_options
    assert sliders["Refine steps"] == defaults.refine_steps and sliders["Coarse steps (Shap-E)"] == defaults.coarse_steps
    assert sliders["Guidance scale"] == defaults.guidance_scale and sliders["Strength"] == defaults.strength
    # Example files are copied into the app's own folder, nowhere else.
    examples = [b for b in demo.blocks.values() if isinstance(b, gr.Dataset)]
    assert len(examples) == 2
    cached = [p for p in app.root.rglob("*") if p.suffix in (".glb", ".obj", ".ply") and "sessions" not in p.parts]
    assert {p.name for p in cached} >= {"rough_chair.glb", "rough_table.obj", "ball.ply"}


# -- the command line --------------------------------------------------------------------------
def test_flags_are_checked_before_any_model_loads(tmp_path, capsys, monkeypatch):
    parser = webapp.build_parser()
    assert parser.parse_args([]).host == "127.0.0.1" and parser.parse_args([]).port == 7860
    assert parser.parse_args([]).share is False
    assert parser.parse_args(["--share", "false"]).share is False
    assert parser.parse_args(["--share"]).share is True and parser.parse_args(["--share", "true"]).share is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--share", "maybe"])
    assert webapp.main(["--tiny", "--port", "70000"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err
    assert webapp.main(["--tiny", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be a positive number" in capsys.readouterr().err
    a_file = tmp_path / "out.txt"
    a_file.write_text("x")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert webapp.main(["--tiny", "--port", str(port)]) == 2
        assert "cannot listen there" in capsys.readouterr().err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    assert webapp.main(["--tiny", "--port", str(free), "--out", str(a_file)]) == 2
    assert "--out is a file" in capsys.readouterr().err
    # Offline without the released weights: exit 3 at once, naming the flags and --tiny.
    cache = tmp_path / "empty-hub-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    assert webapp.main(["--port", str(free)]) == 3
    err = capsys.readouterr().err
    assert "--shap-e DIR" in err and "--tiny" in err


def test_console_script_starts_from_any_folder(tmp_path):
    import subprocess
    import sys

    script = Path(sys.executable).parent / "sharpit-app"
    if not script.exists():
        pytest.skip("sharpit-app is not installed (pip install -e .)")
    proc = subprocess.run([str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--share" in proc.stdout and "--max-upload-mb" in proc.stdout, proc.stderr
