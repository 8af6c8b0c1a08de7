"""`voxel`: a map.json world optimised through a differentiable voxel renderer (SDS or photometric guidance).

    map_io.py     map.json <-> dense arrays, the palette and its colours
    dataset.py    cameras.json, reference views, orbit cameras, the workspace (maps/, datasets/, bundled sample)
    grid.py       DifferentiableVoxelGrid (occupancy + material logits) and the regularisers
    render.py     exact voxel traversal + alpha compositing in pure PyTorch
    guidance.py   photometric loss, SDS through diffusers, the per-camera segment cache
    train.py      the loop: `runforge train voxel`
    export.py     maps/trained_map_{SOURCE}_{X}/ (`runforge export`)
    cli.py        `runforge data render-views`, `runforge export`
"""
