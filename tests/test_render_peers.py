"""sharpit's views against an OpenGL renderer's at the same cameras (skipped where none works).

The peers of :mod:`sharpit.render.gl_reference` (moderngl on EGL, pyrender on OSMesa; Mesa's
llvmpipe on a CPU-only machine) draw the same vertex colours, unlit, into 8-bit buffers. Each
runs in its own process: two OpenGL libraries do not share one well.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from sharpit.render import render_views
from sharpit.render.gl_reference import PEERS
from sharpit.testing.meshes import colored_cube, uv_sphere

SIZE = 320
MESHES = {"sphere": lambda: uv_sphere(64, 128), "cube": colored_cube}


def _peer_render(name: str, mesh: str, path) -> dict:
    code = textwrap.dedent(f"""
        import json, sys, torch
        from sharpit.render.gl_reference import PEERS
        sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
        from test_render_peers import MESHES
        peer = PEERS[{name!r}]
        if not peer.available():
            print(json.dumps({{"skip": True}}))
            sys.exit()
        renderer = peer({SIZE})
        images, mask = renderer.render(MESHES[{mesh!r}]())
        torch.save({{"images": images, "mask": mask}}, {str(path)!r})
        print(json.dumps({{"skip": False, "device": renderer.device}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", sorted(MESHES))
@pytest.mark.parametrize("peer", sorted(PEERS))
def test_views_match_an_opengl_renderer(peer, mesh, tmp_path):
    info = _peer_render(peer, mesh, tmp_path / "peer.pt")
    if info["skip"]:
        pytest.skip(f"{peer} cannot render here (not installed, or no EGL/OSMesa driver)")
    theirs = torch.load(tmp_path / "peer.pt")
    ours = render_views(MESHES[mesh](), size=SIZE)
    covered = ours.alpha[:, 0] > 0
    both = covered & theirs["mask"]
    iou = float(both.sum() / (covered | theirs["mask"]).sum())
    diff = (ours.images - theirs["images"]).abs().amax(1)[both]
    # Coverage differs only along silhouettes (OpenGL's fill rule and 1/256 px vertex grid
    # against sharpit's inclusive edges and 1/16 px grid); colours by the 8-bit quantisation of
    # the peer's buffer, except at pixels on an edge between faces of different colours.
    assert iou >= 0.998, (info["device"], iou)
    assert float(diff.mean()) <= 2.5e-3, (info["device"], float(diff.mean()))
    assert float((diff > 2 / 255).float().mean()) <= 0.002, info["device"]
    assert torch.equal(ours.images[:, :, 0, 0], theirs["images"][:, :, 0, 0])  # the white background
