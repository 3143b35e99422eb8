"""Web app: type a prompt or drop a mesh, watch the stages, orbit the result, download it.

``python -m inference.app [--tiny] [--host 127.0.0.1] [--port 7860] [--share false] [--out DIR] [--encoder DIR]``
(or ``sharpit-app``), then open http://127.0.0.1:7860.

* **Generate**: a prompt, seed, Shap-E and refiner steps, guidance and texturing -> the coarse
  grid, the refined grid, an orbitable 3D view of the GLB and GLB/OBJ/PLY/grid downloads.
* **Edit**: a mesh (GLB, self-contained glTF, OBJ, PLY, STL, OFF) or a saved Shap-E latent
  (``.safetensors``, ``.pt``), a new prompt, strength and the file's up axis -> the same outputs,
  in the asset's own frame and size. The route (auto, latent: through Shap-E's encoder, the
  paper's path; render: the mesh as it is) and an optional source prompt (what the asset shows
  now: its Shap-E latent is edited toward the prompt by DDPM inversion) are
  :meth:`~sharpit.pipeline.SharpIt3DPipeline.edit`'s ``via`` and ``source_prompt``; ``--encoder``
  loads the encoder (``--tiny`` has a tiny one).
* Both tabs' advanced settings include texture optimisation steps (multi-view SDS after the
  reconstruction, :func:`sharpit.optimize.refine_texture`), shown step by step and cancellable.

One pipeline is loaded once and serves everyone through a queue that runs one request at a time
(the Generate, Edit and example events share one concurrency slot, and a lock guards the
pipeline as well). The progress bar names the stage (Shap-E steps or a latent edit's inversion
and regeneration steps, coarse views, refiner steps, reconstruction, optimisation steps, saving);
Cancel stops the running request at the next Shap-E, refiner or optimisation step, and the next
request runs as usual. Bad input (an empty prompt, a 0-byte, corrupt, unsupported or
too large upload, values out of range) shows sharpit's one-line message in the page; the app
keeps serving. Uploads are limited to ``--max-upload-mb`` (:data:`MAX_UPLOAD_MB`, 100 MB).

Files: everything lives in one temporary folder made at start and removed at exit. Gradio keeps
uploads there (its ``GRADIO_TEMP_DIR``, aged out after :data:`FILE_MAX_AGE_S`); each browser
session's results go to ``sessions/<session>/`` inside it, deleted when the tab closes or after
:data:`FILE_MAX_AGE_S` idle, the last :data:`KEEP_RESULTS` kept meanwhile. With ``--out DIR``
every result is also saved there as a result folder (``mesh.glb``, grids, latent,
``metadata.json``). Nothing else is written. The server binds 127.0.0.1 unless ``--host`` says
otherwise; ``--share true`` asks Gradio for a public link.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from inference.common import ENCODER_HELP, add_model_args, prog
from sharpit.errors import CorruptFileError, InputError, SharpItError, UnsupportedFormatError
from sharpit.formats import LATENT_SUFFIXES, MESH_READ_FORMATS

log = logging.getLogger("sharpit.app")


class _Gradio:
    """``gradio``, imported at first use: :func:`main` points ``GRADIO_TEMP_DIR`` at the app's
    folder first (Gradio reads it when imported), and ``--help`` or a bad flag stays fast."""

    def __getattr__(self, name: str):
        import gradio

        return getattr(gradio, name)


gr = _Gradio()

REPO = Path(__file__).resolve().parents[1]
#: Bundled example meshes of the Edit tab (a repository checkout has them).
ASSETS = REPO / "examples" / "assets"

#: Largest upload the app takes, in megabytes (``--max-upload-mb``); Gradio refuses larger files
#: before they are stored, and the handlers check again.
MAX_UPLOAD_MB = 100.0
#: Files (uploads, a closed or idle session's results) older than this are deleted, in seconds.
FILE_MAX_AGE_S = 2 * 3600
#: Results kept per session; older ones are deleted when a new one is made.
KEEP_RESULTS = 3
#: Requests that may wait in the queue (more are refused with Gradio's "queue is full").
QUEUE_SIZE = 16
#: Largest seed the page takes (the pipeline mixes any seed into 64-bit stage seeds: sharpit.pipeline.stage_seed).
MAX_SEED = 2 ** 32 - 1
#: Every file suffix the Edit tab takes.
UPLOAD_SUFFIXES = tuple(MESH_READ_FORMATS) + tuple(LATENT_SUFFIXES)

EXAMPLE_PROMPTS = [
    ["a wooden rocking chair", 0],
    ["a red sports car", 1],
    ["a ceramic teapot with blue flowers", 2],
]
EXAMPLE_EDITS = [
    ["rough_chair.glb", "a golden ornate chair", "auto"],
    ["rough_table.obj", "a marble table with iron legs", "y"],
    ["ball.ply", "a cracked stone ball", "auto"],
]


# -- UI controls <-> GenerationOptions: the one place ---------------------------------------
@dataclass(frozen=True)
class Control:
    """One UI control for one :class:`~sharpit.options.GenerationOptions` field; its initial
    value is the pipeline's saved default (:attr:`SharpIt3DPipeline.default_options`)."""

    option: str
    label: str
    kind: str                       # "int" | "float" (sliders), "bool" (checkbox), "text"
    low: float = 0
    high: float = 0
    step: float = 1
    tabs: Tuple[str, ...] = ("generate", "edit")
    advanced: bool = False
    info: Optional[str] = None


CONTROLS: Tuple[Control, ...] = (
    Control("coarse_steps", "Coarse steps (Shap-E)", "int", 1, 128, 1, tabs=("generate",)),
    Control("strength", "Strength", "float", 0.05, 1.0, 0.05, tabs=("edit",),
            info="1 repaints everything; lower keeps more of the asset's look"),
    Control("refine_steps", "Refine steps", "int", 1, 150, 1),
    Control("guidance_scale", "Guidance scale", "float", 0.0, 15.0, 0.5),
    Control("textured", "Textured (bake a UV texture map)", "bool"),
    Control("coarse_guidance_scale", "Coarse guidance (Shap-E)", "float", 0.0, 30.0, 0.5, tabs=("generate",),
            advanced=True),
    Control("negative_prompt", "Negative prompt", "text", advanced=True),
    Control("mesh_resolution", "Mesh resolution", "int", 16, 512, 16, advanced=True,
            info="the reconstructor's grid per axis"),
    Control("texture_size", "Texture size (px)", "int", 64, 4096, 64, advanced=True),
    Control("optimize_steps", "Texture optimisation steps (SDS)", "int", 0, 1000, 10, advanced=True,
            info="0: off; N steps of multi-view score distillation of the texture under the refiner "
                 "after reconstruction (each about one refiner step)"),
    Control("latent_strength", "Latent edit strength", "float", 0.0, 1.0, 0.01, tabs=("edit",), advanced=True,
            info="with a source prompt: the share of the inversion steps regenerated toward the prompt "
                 "(0 keeps the shape, 1 redraws it)"),
    Control("inversion_steps", "Inversion steps", "int", 2, 256, 1, tabs=("edit",), advanced=True,
            info="with a source prompt: DDPM steps of the latent's inversion (the paper: 128)"),
    Control("latent_guidance_scale", "Latent edit guidance", "float", 0.0, 30.0, 0.5, tabs=("edit",),
            advanced=True, info="with a source prompt: classifier-free guidance of the inversion and the edit"),
)
#: Labels of the non-option inputs, for messages.
LABELS = {"prompt": "Prompt", "seed": "Seed", "upload": "Asset", "up_axis": "Up axis", "via": "Route",
          "source_prompt": "Source prompt", **{c.option: c.label for c in CONTROLS}}
#: The Edit tab's route choices: "auto" is :func:`~sharpit.coarse.edit_defaults.edit_route`'s default.
ROUTES = ("auto", "latent", "render")


def controls(tab: str) -> List[Control]:
    """The controls shown on ``tab`` ("generate" or "edit"), in display order."""
    return [c for c in CONTROLS if tab in c.tabs]


def _coerce(control: Control, value: Any) -> Any:
    """A UI value as the option's type: sliders and number boxes may send 4.0 for 4, and an empty
    text box means None; anything else is passed on for GenerationOptions to judge."""
    if control.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if control.kind == "text" and (value is None or isinstance(value, str)):
        return value if value and value.strip() else None
    return value


def options_from_ui(defaults, tab: str, values: Mapping[str, Any]):
    """The :class:`~sharpit.options.GenerationOptions` of one request: ``defaults`` with the
    ``tab``'s control values applied (missing ones keep their default), validated.

    Raises:
        InputError: a bad value, naming the control's label and the allowed range.
    """
    from sharpit.options import OptionError

    wanted = {c.option: c for c in controls(tab)}
    unknown = sorted(set(values) - set(wanted))
    if unknown:
        raise InputError(f"{unknown[0]} is not a setting of the {tab} tab")
    overrides = {name: _coerce(wanted[name], value) for name, value in values.items()}
    try:
        options = defaults.replace(**overrides)
    except OptionError as exc:
        raise InputError(f"{LABELS.get(exc.option, exc.option)} {exc.detail}") from None
    if int(options.refine_steps * options.strength) < 1:
        raise InputError(f"{LABELS['strength']} {options.strength:g} x {LABELS['refine_steps']} "
                         f"{options.refine_steps} leaves no refiner step; raise either")
    return options


def check_seed(seed: Any) -> Optional[int]:
    """A seed box's value as the pipeline's seed: None (empty) draws a random one."""
    if seed is None or (isinstance(seed, str) and not seed.strip()):
        return None
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"{LABELS['seed']} must be a whole number in [0, {MAX_SEED}] (or empty for a random "
                         f"one), got {seed!r}")
    return seed


def check_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{LABELS['prompt']} is empty; describe the object, e.g. 'a red wooden chair'")
    return prompt.strip()


def check_upload(path: Any, max_mb: float) -> Path:
    """The uploaded file, checked before the pipeline sees it: present, of a supported kind,
    not empty and within the size limit (the message names the file, not the temporary path)."""
    if path is None or (isinstance(path, str) and not path):
        raise InputError(f"no asset: drop a mesh ({', '.join(s[1:].upper() for s in MESH_READ_FORMATS)}) or a "
                         f"saved Shap-E latent ({', '.join(LATENT_SUFFIXES)}) into '{LABELS['upload']}' first")
    path = Path(path)
    name = path.name
    if path.suffix.lower() not in UPLOAD_SUFFIXES:
        raise UnsupportedFormatError(name, f"{path.suffix or 'no extension'} is not supported; meshes: "
                                           f"{', '.join(MESH_READ_FORMATS)}; Shap-E latents: "
                                           f"{', '.join(LATENT_SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"{name}: the upload is gone (the page was open for long); drop the file again")
    size = path.stat().st_size
    if size == 0:
        raise CorruptFileError(name, "is empty (0 bytes); the upload or the export went wrong")
    if size > max_mb * 1e6:
        raise InputError(f"{name} is {size / 1e6:.3g} MB; the app takes files up to {max_mb:g} MB "
                         "(start it with a larger --max-upload-mb, or use sharpit-edit)")
    return path


# -- progress and cancelling ---------------------------------------------------------------
class Cancelled(Exception):
    """The request was cancelled; the message says where it stopped."""


class StageTracker:
    """One progress bar over the pipeline's stages, and the cancel check.

    The stages of a request: Generate: Shap-E steps, the coarse mesh and its six views, refiner
    steps, reconstruction; Edit: reading the asset (and encoding it into Shap-E's latent on the
    latent route), with a source prompt the latent's inversion and its regeneration toward the
    prompt, then the refiner steps and reconstruction; both end with the texture optimisation when
    ``optimize_steps`` > 0, then saving. Shap-E steps are counted with a forward pre-hook on the
    prior (:meth:`prior_call`: ``2 * coarse_steps - 1`` Heun calls in Generate, ``inversion_steps``
    then ``int(inversion_steps * latent_strength)`` DDPM calls in a latent edit), refiner steps
    with ``callback_on_step_end`` (:meth:`refine_step`), optimisation steps with the pipeline's
    ``optimize_callback`` (:meth:`optimize_step`). At each one the cancel flag is checked and
    :class:`Cancelled` raised, which unwinds the pipeline call.

    Args:
        report: receives ``(fraction, text)`` (a ``gr.Progress`` in the app).
        cancelled: says whether the request was cancelled.
        mode: "generate" or "edit".
        options: the request's :class:`~sharpit.options.GenerationOptions`.
        route: an edit's route ("latent" or "render", :func:`~sharpit.coarse.edit_defaults.edit_route`).
        latent_edit: an edit steered by a source prompt (inversion, then regeneration).
        latent_asset: the edited asset is a saved Shap-E latent (nothing to encode).
    """

    #: Rough shares of a GPU run, for where each stage sits on the bar.
    WEIGHTS = {"coarse": 0.30, "read": 0.05, "invert": 0.15, "regenerate": 0.10, "views": 0.05, "refine": 0.50,
               "reconstruct": 0.12, "optimize": 0.60, "save": 0.03}

    def __init__(self, report: Callable[[float, str], None], cancelled: Callable[[], bool], mode: str,
                 options, route: str = "render", latent_edit: bool = False, latent_asset: bool = False) -> None:
        self.report, self.cancelled, self.mode = report, cancelled, mode
        self.coarse_steps = options.coarse_steps
        self.refine_total = max(1, int(options.refine_steps * options.strength))
        self.optimize_total = options.optimize_steps
        self.textured = options.textured or options.optimize_steps > 0
        self.latent_edit = mode == "edit" and latent_edit
        self.inversion_steps = options.inversion_steps
        from sharpit.coarse.inversion import restart_step

        self.regenerate_steps = restart_step(options.inversion_steps, options.latent_strength)
        if mode == "generate":
            self.prior_calls_total = 2 * options.coarse_steps - 1
            stages = ["coarse", "views"]
        else:
            self.prior_calls_total = self.inversion_steps + self.regenerate_steps if self.latent_edit else 0
            stages = ["read"] + (["invert"] if self.latent_edit else []) + \
                (["regenerate"] if self.latent_edit and self.regenerate_steps else [])
        stages += ["refine", "reconstruct"] + (["optimize"] if self.optimize_total else []) + ["save"]
        total = sum(self.WEIGHTS[s] for s in stages)
        self.stages, self.starts, at = stages, {}, 0.0
        for name in stages:
            self.starts[name] = at / total
            at += self.WEIGHTS[name]
        self.route, self.latent_asset = route, latent_asset
        self.prior_calls = 0
        self.where = "before the start"

    def _label(self, name: str, text: str) -> str:
        """``text`` numbered among the request's stages ("3/5 ..."); saving is not numbered."""
        if name == "save":
            return text
        numbered = [s for s in self.stages if s != "save"]
        return f"{numbered.index(name) + 1}/{len(numbered)} {text}"

    def stage(self, name: str, text: str, within: float = 0.0) -> None:
        start = self.starts[name]
        later = self.stages.index(name) + 1
        end = self.starts[self.stages[later]] if later < len(self.stages) else 1.0
        self.where = self._label(name, text)
        self.report(min(1.0, start + (end - start) * within), self.where)

    def check(self) -> None:
        if self.cancelled():
            raise Cancelled(f"Cancelled during: {self.where}.")

    def begin(self) -> None:
        self.check()
        if self.mode == "generate":
            self.stage("coarse", f"Coarse shape (Shap-E): step 0/{self.coarse_steps}")
        elif self.route == "render":
            self.stage("read", "Reading the asset and rendering its six views")
        elif self.latent_asset:
            self.stage("read", "Reading the latent" + ("" if self.latent_edit else ", decoding it and rendering its "
                                                                                 "six views"))
        elif self.latent_edit:
            self.stage("read", "Reading the asset and encoding it into Shap-E's latent")
        else:
            self.stage("read", "Reading the asset, encoding it into Shap-E's latent, decoding it and rendering "
                               "its six views")

    def prior_call(self, module, args) -> None:
        """Forward pre-hook of the Shap-E prior: one sampler call."""
        self.check()
        self.prior_calls += 1
        n = self.prior_calls
        if self.mode == "generate":
            if n < self.prior_calls_total:
                self.stage("coarse", f"Coarse shape (Shap-E): step {n // 2}/{self.coarse_steps}",
                           n / self.prior_calls_total)
            else:   # the last call: then the coarse mesh and its views
                self.stage("views", "Coarse mesh and its six views")
        elif n <= self.inversion_steps:
            self.stage("invert", f"Inverting the latent (source prompt): step {n}/{self.inversion_steps}",
                       n / self.inversion_steps)
        else:
            done = n - self.inversion_steps
            self.stage("regenerate", f"Editing the latent toward the prompt: step {done}/{self.regenerate_steps}",
                       done / max(1, self.regenerate_steps))

    def refine_step(self, pipe, step: int, timestep, tensors: Dict) -> Dict:
        """``callback_on_step_end`` of the refiner."""
        self.check()
        done = step + 1
        if done < self.refine_total:
            self.stage("refine", f"Refining the six views: step {done}/{self.refine_total}",
                       done / self.refine_total)
        else:
            what = "mesh and texture" if self.textured else "mesh"
            self.stage("reconstruct", f"Reconstructing the {what}")
        return {}

    def optimize_step(self, step: int, stats: Dict) -> None:
        """``optimize_callback`` of the pipeline (``step`` counts from 0)."""
        self.check()
        done = step + 1
        self.stage("optimize", f"Optimising the texture (multi-view SDS): step {done}/{self.optimize_total}",
                   done / self.optimize_total)


# -- sessions ------------------------------------------------------------------------------
@dataclass
class Session:
    """One browser tab: its results folder, its cancel state and its activity."""

    folder: Path
    last_used: float = field(default_factory=time.time)
    armed: int = 0              # requests started (tokens handed out by arm())
    cancelled_upto: int = 0     # requests with a token <= this are cancelled
    running: bool = False
    closed: bool = False
    results: int = 0


@dataclass
class RunOutput:
    """What one request produced: the file paths the page shows and the pipeline's result."""

    model: str
    coarse_grid: Optional[str]
    refined_grid: Optional[str]
    files: Optional[List[str]]
    status: str
    folder: Path
    result: Any

    def values(self) -> tuple:
        """In the order of :attr:`SharpItApp.outputs` (``gr.skip()`` for what is not ready yet)."""
        return tuple(gr.skip() if v is None else v
                     for v in (self.model, self.coarse_grid, self.refined_grid, self.files, self.status))


def _last(stream: Iterator[RunOutput]) -> RunOutput:
    out = None
    for out in stream:
        pass
    return out


def _slug(text: str, limit: int = 32) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "item"


class SharpItApp:
    """The app around one loaded :class:`~sharpit.pipeline.SharpIt3DPipeline`.

    :meth:`generate`, :meth:`edit` and :meth:`cancel` are the handlers (testable without a
    browser); :meth:`build` lays them out as a Gradio page.

    Args:
        pipe: the pipeline, used by one request at a time.
        root: the temporary folder everything is written to (made when None; :meth:`close`
            removes it).
        out_dir: also save each result there as a result folder.
        max_upload_mb: the upload size limit.
    """

    def __init__(self, pipe, root: Optional[Path] = None, out_dir: Optional[Path] = None,
                 max_upload_mb: float = MAX_UPLOAD_MB, file_max_age_s: float = FILE_MAX_AGE_S) -> None:
        self.pipe = pipe
        self.defaults = pipe.default_options
        self.root = Path(tempfile.mkdtemp(prefix="sharpit-app-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.max_upload_mb = float(max_upload_mb)
        self.file_max_age_s = float(file_max_age_s)
        self.tiny = "tiny" in pipe.config.model_sources
        self._lock = threading.Lock()            # the pipeline: one request at a time
        self._sessions_lock = threading.Lock()
        self._sessions: Dict[str, Session] = {}
        self._saved = 0                           # results saved under out_dir
        #: Wall-clock times (time.time()) of the last request: handler start, pipeline start and
        #: end, outputs written (benchmarks/bench_app.py reads them).
        self.timeline: Dict[str, float] = {}

    # -- sessions ------------------------------------------------------------------------
    @staticmethod
    def session_key(request: Optional[gr.Request]) -> str:
        key = getattr(request, "session_hash", None) if request is not None else None
        return _slug(str(key), 64) if key else "local"

    def _session(self, key: str) -> Session:
        with self._sessions_lock:
            session = self._sessions.get(key)
            if session is None or session.closed:
                session = self._sessions[key] = Session(self.root / "sessions" / key)
            session.last_used = time.time()
            return session

    def arm(self, session: str = "local") -> int:
        """A token for a request about to be queued (:meth:`cancel` cancels the tokens handed out
        so far, also those still waiting in the queue)."""
        s = self._session(session)
        with self._sessions_lock:
            s.armed += 1
            return s.armed

    def cancel(self, session: str = "local") -> str:
        """Cancel this session's running and queued requests; returns a status line."""
        s = self._session(session)
        with self._sessions_lock:
            pending = s.running or s.armed > s.cancelled_upto
            s.cancelled_upto = s.armed
        return "Cancelling…" if pending else "Nothing to cancel."

    def end_session(self, session: str = "local") -> None:
        """The tab closed: cancel its requests and delete its files (after a running request)."""
        with self._sessions_lock:
            s = self._sessions.get(session)
            if s is None:
                return
            s.cancelled_upto = s.armed
            s.closed = True
        if not s.running:
            self._discard(session, s)

    def _discard(self, key: str, session: Session) -> None:
        with self._sessions_lock:
            if self._sessions.get(key) is session:
                del self._sessions[key]
        shutil.rmtree(session.folder, ignore_errors=True)

    def sweep(self, now: Optional[float] = None) -> None:
        """Delete the files of sessions idle for longer than ``file_max_age_s``."""
        now = time.time() if now is None else now
        with self._sessions_lock:
            stale = [k for k, s in self._sessions.items() if not s.running and now - s.last_used > self.file_max_age_s]
            dropped = [self._sessions.pop(k) for k in stale]
        for s in dropped:
            shutil.rmtree(s.folder, ignore_errors=True)
        sessions = self.root / "sessions"
        if sessions.is_dir():   # folders of sessions this process no longer knows (none, normally)
            known = {s.folder.name for s in self._sessions.values()}
            for folder in sessions.iterdir():
                if folder.name not in known and now - folder.stat().st_mtime > self.file_max_age_s:
                    shutil.rmtree(folder, ignore_errors=True)

    def warm_up(self) -> None:
        """Write each output kind once (a small cube), so the first request does not pay the
        exporters' first-use cost (about half a second for the GLB writer)."""
        from PIL import Image

        from sharpit.mesh_io import save_mesh
        from sharpit.testing.meshes import colored_cube

        folder = self.root / "warm-up"
        try:
            for name in ("cube.glb", "cube.obj", "cube.ply"):
                save_mesh(colored_cube(), folder / name)
            Image.new("RGB", (64, 96), "white").save(folder / "grid.png", compress_level=1)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Remove everything the app wrote (the temporary root)."""
        shutil.rmtree(self.root, ignore_errors=True)

    # -- handlers ------------------------------------------------------------------------
    def generate(self, prompt: Any, seed: Any = None, settings: Optional[Mapping[str, Any]] = None, *,
                 session: str = "local", token: Optional[int] = None,
                 progress: Optional[Callable] = None) -> RunOutput:
        """Text to a mesh. ``settings`` maps Generate-tab controls (:data:`CONTROLS`, by option
        name) to values; missing ones keep the pipeline's defaults.

        Raises:
            SharpItError: bad input (checked before the pipeline runs) or a failing stage.
            Cancelled: :meth:`cancel` was called for this session.
        """
        return _last(self.generate_stream(prompt, seed, settings, session=session, token=token, progress=progress))

    def edit(self, upload: Any, prompt: Any, seed: Any = None, up_axis: str = "auto",
             settings: Optional[Mapping[str, Any]] = None, via: str = "auto", source_prompt: Any = None, *,
             session: str = "local", token: Optional[int] = None,
             progress: Optional[Callable] = None) -> RunOutput:
        """A mesh or latent file re-dressed with a new prompt, in the asset's own frame and size.

        ``via``: "auto" (the pipeline's default route), "latent" or "render" (see
        :meth:`~sharpit.pipeline.SharpIt3DPipeline.edit`); ``source_prompt``: what the asset shows
        now (empty: none), which edits the Shap-E latent toward the prompt on the latent route.

        Raises: as :meth:`generate`.
        """
        return _last(self.edit_stream(upload, prompt, seed, up_axis, settings, via, source_prompt, session=session,
                                      token=token, progress=progress))

    def generate_stream(self, prompt: Any, seed: Any = None, settings: Optional[Mapping[str, Any]] = None, *,
                        session: str = "local", token: Optional[int] = None,
                        progress: Optional[Callable] = None) -> Iterator[RunOutput]:
        """:meth:`generate` in two steps, as the page shows it: first the GLB alone (the viewer
        shows it at once), then every file."""
        self.timeline = {"handler": time.time()}
        prompt = check_prompt(prompt)
        seed = check_seed(seed)
        options = options_from_ui(self.defaults, "generate", settings or {})
        yield from self._run("generate", prompt, options, session, token, progress,
                             call=lambda **kw: self.pipe.generate(prompt, seed=seed, options=options, **kw))

    def edit_stream(self, upload: Any, prompt: Any, seed: Any = None, up_axis: str = "auto",
                    settings: Optional[Mapping[str, Any]] = None, via: str = "auto", source_prompt: Any = None, *,
                    session: str = "local", token: Optional[int] = None,
                    progress: Optional[Callable] = None) -> Iterator[RunOutput]:
        """:meth:`edit` in two steps, as :meth:`generate_stream`."""
        from sharpit.coarse.edit_defaults import edit_route
        from sharpit.mesh_io import UP_AXES

        self.timeline = {"handler": time.time()}
        path = check_upload(upload, self.max_upload_mb)
        prompt = check_prompt(prompt)
        seed = check_seed(seed)
        if up_axis not in UP_AXES:
            raise InputError(f"{LABELS['up_axis']} must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
        is_latent = path.suffix.lower() in LATENT_SUFFIXES
        if path.suffix.lower() in (".glb", ".gltf") and up_axis == "z":
            raise InputError(f"{path.name}: up axis z does not apply to glTF, which is y-up by its specification; "
                             "choose auto")
        if via not in ROUTES:
            raise InputError(f"{LABELS['via']} must be one of {', '.join(ROUTES)}, got {via!r}")
        if source_prompt is not None and not isinstance(source_prompt, str):
            raise InputError(f"{LABELS['source_prompt']} must be text, got {type(source_prompt).__name__}")
        source_prompt = source_prompt.strip() if source_prompt and source_prompt.strip() else None
        options = options_from_ui(self.defaults, "edit", settings or {})
        read_axis = "auto" if is_latent else up_axis
        chosen = None if via == "auto" else via
        route, problem = edit_route(chosen, is_latent, self.pipe.shap_e_encoder is not None,
                                    self.pipe.prior is not None)
        if problem == "latent_asset":
            raise InputError(f"{path.name} is a Shap-E latent: {LABELS['via']} render applies to meshes; choose auto")
        if problem == "no_encoder":
            raise InputError(f"{LABELS['via']} latent encodes the mesh with Shap-E's encoder, which this app was "
                             "started without: restart it with --encoder DIR (the released transmitter.pt + "
                             f"transmitter_config.yaml), or choose {LABELS['via']} render")
        if problem == "no_shap_e":
            raise InputError(f"{LABELS['via']} latent decodes with Shap-E, which this app's pipeline was saved "
                             f"without; choose {LABELS['via']} render")
        if source_prompt is not None and route == "render":
            raise InputError(f"{LABELS['source_prompt']} edits the asset's Shap-E latent, which the render route "
                             f"skips; choose {LABELS['via']} latent (or auto, with an encoder), or clear the "
                             f"{LABELS['source_prompt']}")
        try:
            yield from self._run("edit", prompt, options, session, token, progress, up_axis=read_axis, route=route,
                                 latent_edit=source_prompt is not None, latent_asset=is_latent,
                                 call=lambda **kw: self.pipe.edit(str(path), prompt, seed=seed, options=options,
                                                                  up_axis=read_axis, via=chosen,
                                                                  source_prompt=source_prompt, **kw))
        except SharpItError as exc:   # name the file as the user knows it, not its temporary path
            exc.args = (str(exc).replace(str(path), path.name),)
            raise

    def _run(self, mode: str, prompt: str, options, session_key: str, token: Optional[int],
             progress: Optional[Callable], call: Callable, up_axis: str = "auto", route: str = "render",
             latent_edit: bool = False, latent_asset: bool = False) -> Iterator[RunOutput]:
        session = self._session(session_key)
        if token is None:
            token = self.arm(session_key)
        report = progress if progress is not None else (lambda fraction, desc=None: None)

        def cancelled() -> bool:
            return token <= session.cancelled_upto

        tracker = StageTracker(lambda f, text: report(f, desc=text), cancelled, mode, options, route, latent_edit,
                               latent_asset)
        tracker.check()   # cancelled while queued
        self.sweep()
        session.running = True
        try:
            with self._lock:
                handle = None
                try:
                    tracker.begin()
                    if self.pipe.prior is not None:
                        handle = self.pipe.prior.register_forward_pre_hook(tracker.prior_call)
                    self.timeline["pipeline_start"] = time.time()
                    result = call(callback_on_step_end=tracker.refine_step, optimize_callback=tracker.optimize_step)
                    self.timeline["pipeline_end"] = time.time()
                finally:
                    if handle is not None:
                        handle.remove()
                tracker.check()
                tracker.stage("save", "Saving the mesh")
                start = time.perf_counter()
                session.results += 1
                view = self._write_view(session.folder / f"{session.results:04d}_{mode}_{_slug(prompt)}", result)
                writing = time.perf_counter() - start
            self.timeline["view"] = time.time()
            yield view
            final = self._write_rest(view, session, mode, prompt, up_axis, writing)
            self.timeline["outputs"] = time.time()
            yield final
        finally:
            session.running = False
            if session.closed:
                self._discard(session_key, session)

    # -- outputs -------------------------------------------------------------------------
    def _write_view(self, folder: Path, result) -> RunOutput:
        """The GLB the viewer shows, first and alone."""
        from sharpit.mesh_io import save_mesh

        folder.mkdir(parents=True)
        glb = save_mesh(result.mesh, folder / "mesh.glb")
        return RunOutput(model=str(glb), coarse_grid=None, refined_grid=None, files=None,
                         status="Mesh ready; writing the grids and downloads…", folder=folder, result=result)

    def _write_rest(self, view: RunOutput, session: Session, mode: str, label: str, up_axis: str,
                    writing: float) -> RunOutput:
        """The grids, OBJ/PLY and metadata next to the GLB (the oldest results beyond
        :data:`KEEP_RESULTS` deleted), and with ``--out`` a result folder there too."""
        from sharpit.mesh_io import save_mesh

        start = time.perf_counter()
        folder, result = view.folder, view.result
        mesh = result.mesh
        files = [view.model]
        notes = []
        if mesh.has_texture:   # OBJ + MTL + PNG travel as one zip; PLY cannot hold a texture
            obj = save_mesh(mesh, folder / "obj" / "mesh.obj", up_axis=up_axis)
            archive = folder / "mesh_obj.zip"
            with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
                for part in sorted(obj.parent.iterdir()):
                    zf.write(part, part.name)
            files.append(str(archive))
            notes.append("PLY skipped: it cannot hold a texture")
        else:
            files.append(str(save_mesh(mesh, folder / "mesh.obj", up_axis=up_axis)))
            files.append(str(save_mesh(mesh, folder / "mesh.ply", up_axis=up_axis)))
        coarse, refined = folder / "coarse_grid.png", folder / "refined_grid.png"
        result.coarse_grid.save(coarse, compress_level=1)
        result.refined_grid.save(refined, compress_level=1)
        files += [str(coarse), str(refined)]
        meta = result.metadata()
        meta["files"] = [Path(f).name for f in files] + ["metadata.json"]
        (folder / "metadata.json").write_text(json.dumps(meta, indent=2))
        files.append(str(folder / "metadata.json"))
        saved = None
        if self.out_dir is not None:
            saved = result.save(self._out_folder(folder.name.split("_", 1)[1]), overwrite=False)
        self._prune(session)
        timings = dict(result.timings, save=writing + time.perf_counter() - start)
        return RunOutput(model=view.model, coarse_grid=str(coarse), refined_grid=str(refined), files=files,
                         status=self._status(mode, result, timings, up_axis, notes, saved), folder=folder,
                         result=result)

    def _out_folder(self, name: str) -> Path:
        """A new folder name under ``--out``: time, a number counting this app's results, ``name``."""
        with self._sessions_lock:
            while True:
                self._saved += 1
                path = self.out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}_{self._saved:04d}_{name}"
                if not path.exists():
                    return path

    @staticmethod
    def _prune(session: Session) -> None:
        kept = sorted((p for p in session.folder.iterdir() if p.is_dir()), key=lambda p: p.name)
        for old in kept[:-KEEP_RESULTS]:
            shutil.rmtree(old, ignore_errors=True)

    def _status(self, mode, result, timings, up_axis, notes, saved) -> str:
        stages = " · ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total")
        total = sum(v for k, v in timings.items() if k != "total")
        mesh = result.mesh
        lines = [f"**Done** in {total:.1f} s ({stages}) — seed **{result.seed}** — "
                 f"{mesh.num_vertices} vertices, {mesh.num_faces} faces"
                 f"{', textured' if mesh.has_texture else ''}."]
        if mode == "edit":
            lines.append("The mesh is in the asset's own frame and size"
                         + (f"; OBJ/PLY downloads are {up_axis}-up like the upload." if up_axis == "y" else "."))
        else:
            lines.append("OBJ/PLY downloads are z-up (sharpit's frame; import them as z-up), the GLB y-up "
                         "as glTF specifies.")
        lines += [n + "." for n in notes]
        if saved is not None:
            lines.append(f"Saved to `{saved}`.")
        if self.tiny:
            lines.append("*Random tiny models (--tiny): the output is noise by design.*")
        return "  \n".join(lines)

    # -- the page ------------------------------------------------------------------------
    def _control(self, c: Control, tab: str):
        value = getattr(self.defaults, c.option)
        elem_id = f"{tab}-{c.option.replace('_', '-')}"
        if c.kind == "bool":
            return gr.Checkbox(value=bool(value), label=c.label, info=c.info, elem_id=elem_id)
        if c.kind == "text":
            return gr.Textbox(value=value or "", label=c.label, info=c.info, lines=1, elem_id=elem_id)
        low = min(c.low, value) if c.option != "strength" else c.low
        high = max(c.high, value)
        return gr.Slider(low, high, value=value, step=c.step, label=c.label, info=c.info, elem_id=elem_id)

    def _ui_stream(self, stream: Callable, *args, **kwargs) -> Iterator[tuple]:
        """Run a handler for the page: our errors become a one-line gr.Error (never a stack
        trace), a cancel a status line; anything unexpected is logged here and reported briefly."""
        try:
            for output in stream(*args, **kwargs):
                yield output.values()
        except Cancelled as exc:
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), f"{exc} Ready for the next request."
        except SharpItError as exc:
            raise gr.Error(str(exc), title="Cannot do that", duration=20, print_exception=False) from None
        except gr.Error:
            raise
        except Exception as exc:   # noqa: BLE001 - the page gets one line, the log the traceback
            log.exception("request failed")
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise gr.Error(f"Something failed while making this result ({type(exc).__name__}: {first}). The app "
                           "is still running; try again, or with other settings.", title="Error", duration=20,
                           print_exception=False) from None

    def build(self) -> "gr.Blocks":
        """The page. Points Gradio's upload and cache folder (``GRADIO_TEMP_DIR``, process-wide)
        at :attr:`root`, so the example files it copies, uploads and results all stay there
        (:func:`main` also sets it before Gradio is imported)."""
        os.environ["GRADIO_TEMP_DIR"] = str(self.root)
        import gradio.routes

        if hasattr(gradio.routes, "DEFAULT_TEMP_DIR"):   # read at Gradio's import; used by every page
            gradio.routes.DEFAULT_TEMP_DIR = str(self.root)
        models = ", ".join(f"{k}: {v}" for k, v in self.pipe.models.items())
        with gr.Blocks(title="Sharp-It 3D", analytics_enabled=False,
                       delete_cache=(max(60, int(self.file_max_age_s // 4)), int(self.file_max_age_s))) as demo:
            gr.Markdown("## Sharp-It 3D\nType a prompt or drop a rough mesh, watch the stages, orbit the "
                        "result, download the GLB.")
            token = gr.State(None)
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=320):
                    with gr.Tabs():
                        with gr.Tab("Generate", id="generate"):
                            g_prompt = gr.Textbox(label=LABELS["prompt"], placeholder="a red wooden chair",
                                                  elem_id="gen-prompt", lines=1)
                            g_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (empty = random)",
                                               elem_id="gen-seed")
                            g_ctl = self._controls_ui("generate")
                            with gr.Row():
                                g_btn = gr.Button("Generate", variant="primary", elem_id="gen-button", scale=3)
                                g_cancel = gr.Button("Cancel", variant="stop", elem_id="cancel-button", scale=1)
                            g_examples = gr.Examples(EXAMPLE_PROMPTS, inputs=[g_prompt, g_seed],
                                                     label="Examples (click to run)")
                        with gr.Tab("Edit", id="edit"):
                            e_file = gr.File(label="Asset: a mesh or a Shap-E latent", file_count="single",
                                             file_types=list(UPLOAD_SUFFIXES), type="filepath",
                                             elem_id="edit-file", height=140)
                            gr.Markdown(f"GLB, glTF (self-contained), OBJ, PLY, STL, OFF or a latent "
                                        f"(.safetensors, .pt), up to {self.max_upload_mb:g} MB.")
                            e_prompt = gr.Textbox(label=LABELS["prompt"], placeholder="a golden ornate chair",
                                                  elem_id="edit-prompt", lines=1)
                            e_axis = gr.Radio(["auto", "y", "z"], value="auto", label=LABELS["up_axis"],
                                              info="auto: glTF y-up, OBJ/PLY/STL/OFF z-up; y for most "
                                                   "exporters' OBJ/PLY/STL (Blender's OBJ default)")
                            e_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (empty = random)",
                                               elem_id="edit-seed")
                            e_via = gr.Radio(list(ROUTES), value="auto", label=LABELS["via"], elem_id="edit-via",
                                             info=self._route_info())
                            e_source = gr.Textbox(label=f"{LABELS['source_prompt']} (optional)", lines=1,
                                                  placeholder="a wooden chair", elem_id="edit-source-prompt",
                                                  info="what the asset shows now: on the latent route its Shap-E "
                                                       "latent is edited toward the prompt (the shape can change); "
                                                       "empty keeps the shape")
                            e_ctl = self._controls_ui("edit")
                            with gr.Row():
                                e_btn = gr.Button("Edit", variant="primary", elem_id="edit-button", scale=3)
                                e_cancel = gr.Button("Cancel", variant="stop", elem_id="edit-cancel-button",
                                                     scale=1)
                            edit_examples = [[str(ASSETS / f), p, a] for f, p, a in EXAMPLE_EDITS
                                             if (ASSETS / f).is_file()]
                            e_examples = gr.Examples(edit_examples, inputs=[e_file, e_prompt, e_axis],
                                                     label="Examples: bundled rough meshes (click to run)") \
                                if edit_examples else None
                with gr.Column(scale=3, min_width=400):
                    viewer = gr.Model3D(label="Result (drag to orbit, scroll to zoom)", elem_id="viewer",
                                        height=420, clear_color=(0.94, 0.94, 0.95, 1.0))
                    status = gr.Markdown("Ready.", elem_id="status")
                    with gr.Row():
                        coarse = gr.Image(label="Coarse views (Shap-E)", type="filepath", height=260,
                                          interactive=False, elem_id="coarse-grid")
                        refined = gr.Image(label="Refined views", type="filepath", height=260,
                                           interactive=False, elem_id="refined-grid")
                    files = gr.File(label="Downloads: GLB, OBJ, PLY, grids, metadata", file_count="multiple",
                                    interactive=False, elem_id="downloads")
            gr.Markdown(f"<small>Models: {models}. One request runs at a time; others wait in the "
                        "queue.</small>")
            outputs = [viewer, coarse, refined, files, status]
            self.outputs = outputs

            g_names = [c.option for c in controls("generate")]
            e_names = [c.option for c in controls("edit")]

            def arm(request: gr.Request):   # at the click, before the queue: a token, a clean status
                return self.arm(self.session_key(request)), ""

            def run_generate(request: gr.Request, progress=gr.Progress(), *values):
                tok, prompt, seed, *rest = values
                yield from self._ui_stream(self.generate_stream, prompt, seed, dict(zip(g_names, rest)),
                                           session=self.session_key(request), token=tok, progress=progress)

            def run_edit(request: gr.Request, progress=gr.Progress(), *values):
                tok, upload, prompt, axis, seed, via, source, *rest = values
                yield from self._ui_stream(self.edit_stream, upload, prompt, seed, axis, dict(zip(e_names, rest)),
                                           via, source, session=self.session_key(request), token=tok,
                                           progress=progress)

            def cancel(request: gr.Request):
                return self.cancel(self.session_key(request))

            def end(request: gr.Request):
                self.end_session(self.session_key(request))

            pipeline_slot = dict(concurrency_id="pipeline", concurrency_limit=1, show_progress_on=[viewer])
            g_inputs = [token, g_prompt, g_seed] + [g_ctl[n] for n in g_names]
            e_inputs = [token, e_file, e_prompt, e_axis, e_seed, e_via, e_source] + [e_ctl[n] for n in e_names]
            for trigger in [g_btn.click, g_prompt.submit, g_examples.load_input_event.then]:
                trigger(arm, None, [token, status], queue=False, show_progress="hidden").then(
                    run_generate, g_inputs, outputs, **pipeline_slot)
            triggers = [e_btn.click] + ([e_examples.load_input_event.then] if e_examples is not None else [])
            for trigger in triggers:
                trigger(arm, None, [token, status], queue=False, show_progress="hidden").then(
                    run_edit, e_inputs, outputs, **pipeline_slot)
            for button in (g_cancel, e_cancel):
                button.click(cancel, None, status, queue=False, show_progress="hidden")
            demo.unload(end)
            preload = _viewer_preload_js()
            if preload:
                demo.load(None, None, None, js=preload)
        demo.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
        return demo

    def _route_info(self) -> str:
        """The Route radio's help: what each choice does, and what "auto" means for these models."""
        from sharpit.coarse.edit_defaults import edit_route

        auto, _ = edit_route(None, False, self.pipe.shap_e_encoder is not None, self.pipe.prior is not None)
        text = ("latent: encode the mesh into Shap-E's latent, decode and render it as the refiner was trained "
                "(the paper's path); render: the mesh's views as they are; auto: " + auto + " for these models")
        if self.pipe.shap_e_encoder is None:
            text += " (no Shap-E encoder loaded: start the app with --encoder DIR for the latent route)"
        return text

    def _controls_ui(self, tab: str) -> Dict[str, Any]:
        made = {}
        basic = [c for c in controls(tab) if not c.advanced]
        for c in basic:
            made[c.option] = self._control(c, tab)
        with gr.Accordion("Advanced", open=False):
            for c in controls(tab):
                if c.advanced:
                    made[c.option] = self._control(c, tab)
        return made


def _viewer_preload_js() -> Optional[str]:
    """Page-load JavaScript that fetches the 3D viewer's code (Babylon.js, a few MB that Gradio
    loads only when the first mesh arrives) while the user is still typing, so the first result
    shows as fast as the next ones. None when this Gradio's asset names are not recognised (the
    viewer then loads on first use, as usual)."""
    import gradio

    assets = Path(gradio.__file__).parent / "templates" / "frontend" / "assets"
    canvas = sorted(assets.glob("Canvas3D-*.js"))
    if len(canvas) != 1:
        return None
    libs = re.findall(r"import\(`\./(lib-[\w-]+\.js)`\)", canvas[0].read_text(errors="replace"))
    modules = [canvas[0].name] + libs[:1]
    imports = "; ".join(f"import(new URL('assets/{m}', document.baseURI).href).catch(() => null)" for m in modules)
    return f"() => {{ setTimeout(() => {{ {imports}; }}, 0); }}"


# -- command line --------------------------------------------------------------------------
#: The page's font stack: the system's fonts, so the page loads nothing from the internet.
FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "DejaVu Sans", "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "DejaVu Sans Mono", "monospace"]


def _flag_bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog("app"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="random tiny models, offline, in seconds: a smoke test of the whole app")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (127.0.0.1: this machine only; 0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", type=_flag_bool, nargs="?", const=True, default=False,
                        help="ask Gradio for a public share link (true/false; default false)")
    parser.add_argument("--out", default=None, help="also save every result as a folder under this one")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB,
                        help=f"largest upload taken, in MB ({MAX_UPLOAD_MB:g})")
    add_model_args(parser)
    parser.add_argument("--encoder", default=None, help=ENCODER_HELP + " (the Edit tab's latent route)")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Every flag checked before any model loads (a bad one exits 2 naming it)."""
    from inference.common import check_output

    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):
        raise InputError(f"--max-upload-mb must be a positive number, got {args.max_upload_mb}")
    try:
        with socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((args.host, args.port))
    except OSError as exc:
        raise InputError(f"--host {args.host} --port {args.port}: cannot listen there ({exc.strerror or exc}); "
                         "choose another --port") from None
    if args.out is not None:
        check_output(Path(args.out), overwrite=False, batch=True)


def _main(argv: Optional[List[str]] = None) -> int:
    import torch

    from inference.common import check_weights, load_pipeline

    args = build_parser().parse_args(argv)
    _check_args(args)
    check_weights(args, need_coarse=True)
    logging.basicConfig(level=logging.INFO, format="[sharpit-app] %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="sharpit-app-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root)   # before Gradio is imported: all its files go there
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app = None

    def stop(signum, frame):   # SIGTERM: leave through the finally below, which removes the folder
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"[sharpit-app] loading the models on {device}…", flush=True)
        pipe = load_pipeline(args, device, need_coarse=True)
        pipe.set_progress_bar_config(disable=True)
        app = SharpItApp(pipe, root=root, out_dir=None if args.out is None else Path(args.out),
                         max_upload_mb=args.max_upload_mb)
        demo = app.build()
        app.warm_up()
        theme = gr.themes.Soft(font=FONTS, font_mono=MONO)
        demo.launch(server_name=args.host, server_port=args.port, share=args.share, inbrowser=False,
                    max_file_size=f"{args.max_upload_mb:g}mb", theme=theme, ssr_mode=False, show_error=False,
                    allowed_paths=[str(Path(args.out).resolve())] if args.out else None,
                    footer_links=["gradio"], mcp_server=False)
    except KeyboardInterrupt:
        print("[sharpit-app] stopped", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from inference.common import main_guard

    return main_guard(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
