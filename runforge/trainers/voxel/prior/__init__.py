"""A voxel-scene diffusion prior trained here: captioned scenes (`scenes`), the model and its training
(`model`), and the diffusion classifier that scores a world against captions (`classifier`)."""
