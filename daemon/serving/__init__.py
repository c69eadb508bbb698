"""The serving side: the inference loop, the publish gate and the loop's publish step.

What decides what inference sees, and the loop that serves it. Its ports and the values they
carry (:class:`~driftd.ports.Predictions`, ...) live in :mod:`driftd.ports.serving`. May import
:mod:`driftd.learning`, :mod:`driftd.decode`, :mod:`driftd.ports` and :mod:`driftd.records`;
never Kafka, Prometheus or an adapter (those implement its ports).
"""
