"""Training Sharp-It's refiner on your own assets: ``python -m training.prepare_pairs`` writes
(coarse grid, target grid, caption) shards, ``python -m training.train_sharpit`` fine-tunes the UNet
with accelerate. See ``training/README.md``."""
