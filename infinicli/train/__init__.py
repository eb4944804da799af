"""Training of the Infini-attention retrofit: recipe (config), samples in the product's layout (data), and
the loop with memory carried through every segment (loop). No terminal code here: progress goes out through
callbacks, and `infinicli.cli.train` is the command line around it."""

from infinicli.train.config import TrainConfig, load_config
from infinicli.train.loop import Progress, train

__all__ = ["Progress", "TrainConfig", "load_config", "train"]
