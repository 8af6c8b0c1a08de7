"""Watching and steering runs: the web dashboard (`runforge serve`) and the analysis CLI.

Everything here reads what the run layer wrote (runforge/run) and steers a run
only through its control channel (`control/` files). Nothing imports torch.
"""
