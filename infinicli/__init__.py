"""infinicli: stream arbitrarily long documents through an Infini-attention language model."""

__version__ = "0.1.0"
