"""`splat`: 3D Gaussian splatting from a COLMAP scene (gsplat's simple_trainer on the run layer).

    runforge data synthetic-scene data/synthetic           # a scene to train on, no download
    runforge train splat --preset cpu --data_dir data/synthetic --out results/synthetic
    runforge train splat --data_dir data/synthetic --ckpt results/synthetic/ckpts/ckpt_1499_rank0.pt --out results/eval
    torchrun --standalone --nproc_per_node 2 -m runforge train splat --preset cpu --data_dir ... --out ...

Modules: config (flags), colmap (scene loading), scene (synthetic scenes), raster (the CPU
rasterizer), kernels (its numba kernels), losses (the training loss's SSIM), backend (CPU or
gsplat), splats (parameters, optimizers, PLY), strategy (default/mcmc densification), evaluation
(metrics, trajectories), train (the loop).
"""
