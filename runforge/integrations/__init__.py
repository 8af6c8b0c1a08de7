"""runforge inside other training frameworks, each imported only when used (they need torch):

    runforge.integrations.lightning     RunforgeLogger, RunforgeControl (pip install runforge[lightning])
    runforge.integrations.huggingface   RunforgeCallback for transformers' Trainer (runforge[huggingface])

`runforge.tensorboard.SummaryWriter` is the drop-in for TensorBoard-style scripts. docs/integrations.md
says what maps to what.
"""
