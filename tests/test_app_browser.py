"""The web app in a real browser: ``python -m inference.app --tiny`` in a subprocess, driven by
headless Chromium (Debian's ``chromium`` package, through Playwright's Python API; no browser is
downloaded). Type a prompt, wait for the result, check that the 3D viewer fetched a GLB that passes
the Khronos glTF validator and drew it, upload a corrupt file and read the error in the page, run
an example with one click, cancel a long run, then stop the app and check it left no files behind.

Skips when chromium or playwright is missing (.ci/run installs chromium when it can). With
``SHARPIT_APP_SCREENSHOT=docs/app.png`` the screenshot of the finished page is also saved there.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("gradio")

TIMEOUT_MS = 180_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """The app on a free local port; its temporary files go to ``tmp_path/tmp`` (TMPDIR)."""
    port, tmp, cwd, log = _free_port(), tmp_path / "tmp", tmp_path / "cwd", tmp_path / "app.log"
    tmp.mkdir()
    cwd.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TMPDIR=str(tmp), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "inference.app", "--tiny", "--port", str(port)], cwd=cwd,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the app did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    yield {"url": url, "proc": proc, "tmp": tmp, "cwd": cwd, "log": log}
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)


def _wait_status(page, text):
    page.wait_for_function("t => (document.querySelector('#status') || {}).innerText?.includes(t)", arg=text,
                           timeout=TIMEOUT_MS)


def _foreground_fraction(png: bytes) -> float:
    """Share of pixels that differ from the image's corner (the viewer's background)."""
    import io

    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float((np.abs(img - img[2, 2]).sum(-1) > 30).mean())


def test_prompt_to_orbitable_glb_and_a_readable_error(server, tmp_path, gltf_validate):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--enable-unsafe-swiftshader"],
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "browser-cache"),
                 "XDG_CONFIG_HOME": str(tmp_path / "browser-config")})
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 940})
            page.add_init_script("performance.setResourceTimingBufferSize(100000)")   # the page loads many
            page.goto(server["url"], wait_until="load")
            page.locator("#gen-prompt textarea").fill("a wooden rocking chair")
            page.locator("#gen-button").click()
            _wait_status(page, "Done")

            # The viewer fetched the result's GLB (its own request), and it is valid glTF 2.0.
            viewer_glbs = """() => performance.getEntriesByType('resource')
                .filter(e => e.name.endsWith('.glb') && e.initiatorType === 'xmlhttprequest').map(e => e.name)"""
            page.wait_for_function(f"({viewer_glbs})().length > 0", timeout=TIMEOUT_MS)
            glb_urls = page.evaluate(viewer_glbs)
            assert len(glb_urls) == 1 and glb_urls[0].endswith("/mesh.glb"), glb_urls
            glb = page.request.get(glb_urls[0]).body()
            assert glb[:4] == b"glTF"
            (tmp_path / "viewer.glb").write_bytes(glb)
            report = gltf_validate(tmp_path / "viewer.glb")
            assert report["numErrors"] == 0, report["messages"]
            # ... and drew it: the canvas is no longer plain background.
            page.wait_for_timeout(1000)
            assert _foreground_fraction(page.locator("#viewer canvas").screenshot()) > 0.01
            downloads = page.locator("#downloads").inner_text().replace("\n", "")
            for name in ("mesh.glb", "mesh.obj", "mesh.ply", "coarse_grid.png", "refined_grid.png"):
                assert name in downloads
            shot = page.screenshot(path=str(tmp_path / "app.png"))
            if os.environ.get("SHARPIT_APP_SCREENSHOT"):
                Path(os.environ["SHARPIT_APP_SCREENSHOT"]).write_bytes(shot)

            # Cancel stops a long run in the refiner, and says so.
            steps = page.locator("#generate-refine-steps input[type=number]")
            steps.fill("150")
            steps.press("Enter")
            page.locator("#gen-button").click()
            page.wait_for_function("document.body.innerText.includes('3/4 Refining the six views')",
                                   timeout=TIMEOUT_MS)
            page.locator("#cancel-button").click()
            _wait_status(page, "Cancelled during: 3/4 Refining the six views")

            # A corrupt upload: sharpit's one-line message in the page, no stack trace.
            page.get_by_role("tab", name="Edit").click()
            broken = tmp_path / "broken.glb"
            broken.write_bytes(b"glTF" + b"\x07garbage" * 64)
            page.locator("#edit-file input[type=file]").set_input_files(str(broken))
            page.locator("#edit-prompt textarea").fill("a golden chair")
            page.wait_for_timeout(500)
            page.locator("#edit-button").click()
            toast = page.locator(".toast-body").filter(has_text="broken.glb")
            toast.wait_for(timeout=TIMEOUT_MS)
            assert "could not be read" in toast.inner_text()
            assert "Traceback" not in page.content() and str(server["tmp"]) not in toast.inner_text()

            # The latent-edit inputs reach the handler: a source prompt on the render route is refused.
            page.locator("#edit-via").get_by_text("render", exact=True).click()
            page.locator("#edit-source-prompt textarea").fill("a chair")
            page.wait_for_timeout(500)
            page.locator("#edit-button").click()
            page.locator(".toast-body").filter(has_text="which the render route skips").wait_for(timeout=TIMEOUT_MS)
            page.locator("#edit-via").get_by_text("auto", exact=True).click()
            page.locator("#edit-source-prompt textarea").fill("")

            # The app still serves: one click on a bundled example runs an edit.
            page.get_by_text("a golden ornate chair").click()
            _wait_status(page, "own frame and size")
        finally:
            browser.close()

    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, server["log"].read_text()[-3000:]
    # Uploads, results and Gradio's cache all removed (torch makes its own empty compile-cache folder).
    assert [p.name for p in server["tmp"].iterdir() if not p.name.startswith("torchinductor_")] == []
    assert list(server["cwd"].iterdir()) == []   # nothing in the working folder either
