"""The learning core: the model, the online learner, LR policies and the prequential window.

May import torch, numpy and :mod:`driftd.records`; never the adaptation, pruning, serving,
settings or tools packages, nor any adapter (Kafka, Prometheus, the filesystem).
"""
