"""`sr`: single-image super-resolution with an adaptive loss system; writes `Statistik_{STEP}.json` snapshots.

    runforge train sr --preset cpu                       # bundled procedural textures, x2, a few minutes on a CPU
    runforge train sr --data_root DIR --scale 4          # your own HR images (DIR/train, DIR/val)
    runforge train sr --out runs/x --resume              # continue from ckpts/last.pt

Modules: config (flags), data (images, degradation, bundled textures), model (residual CNN +
PixelShuffle with named blocks), losses (l1, ms, gradient, perceptual, SSIM/PSNR), adaptive (loss
weights, plateau, LR boost, gradient clipping), train (the loop).
"""
