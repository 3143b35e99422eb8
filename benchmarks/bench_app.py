"""The web app's own overhead, measured in a real browser (headless Chromium) on ``--tiny``:

* **click -> pipeline starts**: from the Generate click in the page to ``pipe.generate`` being
  called on the server (the click's request, the queue, the handler's checks);
* **pipeline ends -> viewer shows the mesh**: from ``pipe.generate`` returning to the first frame
  the 3D viewer draws the new mesh in (writing the GLB, Gradio sending the result, the browser
  fetching the GLB, the viewer parsing and drawing it).

    python benchmarks/bench_app.py --device cpu --runs 5          # needs Debian's chromium + playwright

The app runs in this process (so its timeline can be read: :attr:`SharpItApp.timeline`, wall-clock
``time.time()``); the browser's clock is the same system clock (``Date.now()``). The click time is
taken by a capturing click listener; the frame the mesh appears in is found by hashing the viewer's
canvas every animation frame (the page is given ``preserveDrawingBuffer`` so the canvas can be
read). The first result also loads the viewer's code (Babylon.js) and is reported apart; the table
gives the median of the following runs. The pipeline's own time is not part of either number.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: Lets the page read the WebGL canvas back (the viewer does not preserve its drawing buffer).
INIT_SCRIPT = """
const getContext = HTMLCanvasElement.prototype.getContext;
HTMLCanvasElement.prototype.getContext = function(type, attrs) {
  if (type === 'webgl2' || type === 'webgl') attrs = Object.assign({}, attrs || {}, {preserveDrawingBuffer: true});
  return getContext.call(this, type, attrs);
};
"""
#: Records the click time, and every change of the viewer's picture: [Date.now(), hash, foreground pixels].
WATCH_SCRIPT = """
window.__frames = []; window.__clicks = [];
performance.setResourceTimingBufferSize(100000);
document.addEventListener('click', e => {
  if (e.target.closest('#gen-button')) window.__clicks.push(Date.now());
}, true);
(function loop() {
  const c = document.querySelector('#viewer canvas');
  if (c && c.width > 0) {
    const o = window.__off || (window.__off = document.createElement('canvas'));
    o.width = 64; o.height = 64;
    const ctx = o.getContext('2d', {willReadFrequently: true});
    ctx.clearRect(0, 0, 64, 64);
    ctx.drawImage(c, 0, 0, 64, 64);
    const d = ctx.getImageData(0, 0, 64, 64).data;
    let h = 0, fg = 0;
    for (let i = 0; i < d.length; i += 4) {
      h = (Math.imul(h, 31) + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) >>> 0;
      if (d[i + 3] > 0 && Math.abs(d[i] - d[0]) + Math.abs(d[i + 1] - d[1]) + Math.abs(d[i + 2] - d[2]) > 24) fg++;
    }
    const last = window.__frames[window.__frames.length - 1];
    if (!last || last[1] !== h) window.__frames.push([Date.now(), h, fg]);
  }
  requestAnimationFrame(loop);
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="where the tiny pipeline runs: auto, cpu or cuda")
    parser.add_argument("--runs", type=int, default=5, help="timed runs after the first (5)")
    parser.add_argument("--mesh-resolution", type=int, default=None,
                        help="reconstruction grid of the tiny runs (the tiny default: 64); bigger means a bigger GLB")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium",
                        help="the Chromium binary (Debian's chromium package)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = Path(tempfile.mkdtemp(prefix="sharpit-app-bench-"))
    os.environ["GRADIO_TEMP_DIR"] = str(root)   # before Gradio is imported, as inference.app does
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import torch
    from playwright.sync_api import sync_playwright

    from inference.app import FONTS, MONO, SharpItApp
    from sharpit import SharpIt3DPipeline

    import gradio as gr

    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    pipe = SharpIt3DPipeline.from_tiny(device=device)
    pipe.set_progress_bar_config(disable=True)
    if args.mesh_resolution is not None:
        pipe.set_default_options(mesh_resolution=args.mesh_resolution)
    app = SharpItApp(pipe, root=root)
    demo = app.build()
    app.warm_up()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, ssr_mode=False,
                theme=gr.themes.Soft(font=FONTS, font_mono=MONO))
    rows = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                         args=["--enable-unsafe-swiftshader", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.add_init_script(INIT_SCRIPT)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="load")
            page.wait_for_selector("#gen-prompt textarea", timeout=60000)
            page.evaluate(WATCH_SCRIPT)
            for run in range(args.runs + 1):
                seed = 100 + run
                page.locator("#gen-prompt textarea").fill(f"a chair number {run}")
                page.locator("#gen-seed input").fill(str(seed))
                frames_before = page.evaluate("window.__frames.length")
                page.locator("#gen-button").click()
                page.wait_for_function(f"document.querySelector('#status').innerText.includes('seed {seed} ')",
                                       timeout=300000)
                page.wait_for_timeout(1500)   # let the viewer settle
                timeline = dict(app.timeline)
                click = page.evaluate("window.__clicks[window.__clicks.length - 1]") / 1000
                glb = page.evaluate("""click => performance.getEntriesByType('resource')
                    .map(e => [performance.timeOrigin + e.startTime, performance.timeOrigin + e.responseEnd,
                               e.encodedBodySize, e.name])
                    .filter(e => e[3].endsWith('.glb') && e[0] >= click).pop()""", click * 1000)
                frames = page.evaluate("window.__frames")[frames_before:]
                shown = [f for f in frames if f[0] / 1000 >= timeline["pipeline_end"] and f[2] > 0]
                if not shown:
                    raise RuntimeError(f"run {run}: the viewer never showed a mesh (frames: {frames})")
                rows.append({
                    "click_to_start": timeline["pipeline_start"] - click,
                    "end_to_shown": shown[0][0] / 1000 - timeline["pipeline_end"],
                    "end_to_glb_written": timeline["view"] - timeline["pipeline_end"],
                    "glb_written_to_fetched": glb[1] / 1000 - timeline["view"],
                    "fetched_to_shown": shown[0][0] / 1000 - glb[1] / 1000,
                    "pipeline": timeline["pipeline_end"] - timeline["pipeline_start"],
                    "glb_kb": glb[2] / 1024,
                })
                r = rows[-1]
                print(f"run {run}{' (first: the viewer starts its 3D engine)' if run == 0 else ''}: "
                      + ", ".join(f"{k} {v * 1000:.0f} ms" if k != "glb_kb" else f"GLB {v:.0f} KiB"
                                  for k, v in r.items()), flush=True)
            browser.close()
    finally:
        demo.close()
        app.close()
    timed = rows[1:] or rows
    med = {k: statistics.median(r[k] for r in timed) for k in timed[0]}
    load = os.getloadavg()
    print()
    print(f"median of {len(timed)} runs after the first, {datetime.datetime.now():%Y-%m-%d %H:%M}, "
          f"{platform.machine()} {device}, torch {torch.__version__}, gradio {gr.__version__}, "
          f"load average {load[0]:.1f}:")
    print("| command | click -> pipeline starts (ms) | pipeline ends -> viewer shows (ms) | of which: GLB written / "
          "sent and fetched / drawn (ms) | first result: ends -> shows (ms) | GLB (KiB) |")
    print("|---|---|---|---|---|---|")
    print(f"| `python benchmarks/bench_app.py {shlex.join(argv if argv is not None else sys.argv[1:])}` | "
          f"{med['click_to_start'] * 1000:.0f} | {med['end_to_shown'] * 1000:.0f} | "
          f"{med['end_to_glb_written'] * 1000:.0f} / {med['glb_written_to_fetched'] * 1000:.0f} / "
          f"{med['fetched_to_shown'] * 1000:.0f} | {rows[0]['end_to_shown'] * 1000:.0f} | {med['glb_kb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
