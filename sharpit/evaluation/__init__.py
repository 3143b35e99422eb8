"""Evaluation harness (issue 12): metrics over multi-view grids and meshes against ground-truth
objects, the methods compared, and the run/report machinery behind ``sharpit-evaluate``.

Modules: :mod:`.images` (8-bit views), :mod:`.fid`, :mod:`.similarity` (CLIP, DINO),
:mod:`.pixels` (PSNR, SSIM), :mod:`.lpips` (LPIPS without torchvision), :mod:`.geometry` (Chamfer,
F-score), :mod:`.methods`, :mod:`.run`, :mod:`.records` (run folder files), :mod:`.report` (table, plots, gallery). Heavy dependencies
(matplotlib: ``pip install 'sharpit[eval]'``; torch-fidelity: ``pip install --no-deps torch-fidelity``,
see :func:`.fid.require_torch_fidelity`) are imported where used.
"""
