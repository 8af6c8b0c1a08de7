"""`toy`: a torch-free curve fit that exercises every part of the run layer in seconds."""
