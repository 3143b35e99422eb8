"""The evaluation harness's own cost per asset: metrics only, with full-size feature extractors
(torch-fidelity's InceptionV3, CLIP ViT-L/14's vision tower, DINO ViT-B/16, LPIPS's AlexNet trunk;
``--lpips-net vgg`` for VGG16) holding random weights, built from the released configs and loaded
through the real loaders.

    python benchmarks/bench_evaluate.py                  # CPU
    python benchmarks/bench_evaluate.py --device cuda

Per asset the harness computes, once, the ground truth's CLIP and DINO embeddings, Inception
features and LPIPS trunk features (six 320x320 views), and for each method the same for its six
views plus PSNR/SSIM/LPIPS per view and Chamfer/F-score on 10k points per surface. Printed:
seconds for the ground-truth part, for one method's part, and their sum (one asset, one method),
median of ``--repeats``, and LPIPS's own share of both parts; the target is metrics under 5% of a
method's GPU time per asset (Sharp-It ~10 s, so < 0.5 s).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchutil import peak_memory_bytes, sync  # noqa: E402


def _full_size_extractors(root: Path, device, lpips_net: str):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection, ViTConfig, \
        ViTImageProcessor, ViTModel

    from sharpit.evaluation.fid import load_inception
    from sharpit.evaluation.lpips import load_lpips
    from sharpit.evaluation.similarity import load_clip, load_dino
    from sharpit.testing.evaluation import save_random_inception, save_random_lpips

    inception = load_inception(save_random_inception(root / "weights-inception-2015-12-05-6726825d.pth"), device)
    clip_dir, dino_dir = root / "clip-vit-large-patch14", root / "dino-vitb16"
    # openai/clip-vit-large-patch14's vision tower and facebook/dino-vitb16, as in their config.json
    CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                   num_attention_heads=16, image_size=224, patch_size=14,
                                                   projection_dim=768, hidden_act="quick_gelu")).save_pretrained(clip_dir)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(clip_dir)
    ViTModel(ViTConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=16), add_pooling_layer=False).save_pretrained(dino_dir)
    ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.485, 0.456, 0.406],
                      image_std=[0.229, 0.224, 0.225], resample=3).save_pretrained(dino_dir)
    lpips = load_lpips(lpips_net, save_random_lpips(root / f"lpips-{lpips_net}", lpips_net), device)
    return inception, load_clip(clip_dir, device), load_dino(dino_dir, device), lpips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--points", type=int, default=10000, help="points per surface for Chamfer/F-score")
    parser.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"])
    args = parser.parse_args()

    from sharpit.evaluation.fid import inception_features
    from sharpit.evaluation.geometry import mesh_geometry
    from sharpit.evaluation.lpips import lpips_distance, lpips_reference
    from sharpit.evaluation.pixels import psnr, ssim
    from sharpit.evaluation.similarity import cosine_similarity
    from sharpit.render import render_views
    from sharpit.testing.meshes import colored_cube, uv_sphere

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        inception, clip, dino, lpips = _full_size_extractors(Path(tmp), device, args.lpips_net)
    gt_mesh, mesh = uv_sphere(48, 96), colored_cube()
    gt_views = render_views(gt_mesh, shading="lambertian", supersample=2).images.cpu()
    views = render_views(mesh, shading="lambertian", supersample=2).images.cpu()

    def timed(key, fn, *a):
        sync(device)
        start = time.perf_counter()
        out = fn(*a)
        sync(device)
        lpips_times[key] += time.perf_counter() - start
        return out

    def ground_truth():
        return (clip.embed(gt_views), dino.embed(gt_views), inception_features(inception, gt_views),
                timed("ground truth", lpips_reference, lpips, gt_views))

    def method(gt):
        cosine_similarity(clip.embed(views), gt[0])
        cosine_similarity(dino.embed(views), gt[1])
        inception_features(inception, views)
        psnr(views, gt_views), ssim(views, gt_views)
        timed("one method", lpips_distance, lpips, views, gt[3])
        mesh_geometry(mesh, gt_mesh, num_points=args.points)

    times = {"ground truth": [], "one method": []}
    lpips_runs = {"ground truth": [], "one method": []}
    with torch.no_grad():
        lpips_times = {"ground truth": 0.0, "one method": 0.0}
        gt = ground_truth()
        method(gt)   # warm-up
        for _ in range(args.repeats):
            lpips_times = {"ground truth": 0.0, "one method": 0.0}
            sync(device)
            t0 = time.perf_counter()
            gt = ground_truth()
            sync(device)
            t1 = time.perf_counter()
            method(gt)
            sync(device)
            times["ground truth"].append(t1 - t0)
            times["one method"].append(time.perf_counter() - t1)
            for key in lpips_runs:
                lpips_runs[key].append(lpips_times[key])
    gt_s, m_s = statistics.median(times["ground truth"]), statistics.median(times["one method"])
    lp_gt, lp_m = statistics.median(lpips_runs["ground truth"]), statistics.median(lpips_runs["one method"])
    print(f"# bench_evaluate {datetime.date.today()} {platform.node()} device={device} "
          f"torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"# command: python benchmarks/bench_evaluate.py {shlex.join(sys.argv[1:])}")
    print(f"ground truth (CLIP, DINO, Inception, LPIPS-{args.lpips_net} features on 6 views): {gt_s:.2f} s "
          f"(LPIPS {lp_gt:.2f} s)")
    print(f"one method (CLIP, DINO, Inception, PSNR, SSIM, LPIPS-{args.lpips_net} on 6 views + Chamfer/F-score "
          f"{args.points} pts): {m_s:.2f} s (LPIPS {lp_m:.2f} s)")
    print(f"per asset with one method: {gt_s + m_s:.2f} s = {100 * (gt_s + m_s) / 10:.0f}% of Sharp-It's ~10 s "
          f"(target < 5%); peak memory {peak_memory_bytes(device) / 2 ** 30:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
