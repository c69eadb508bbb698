"""driftd: keep a PyTorch model learning from a live stream."""

__version__ = "0.1.0"
