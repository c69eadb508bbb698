"""The serving side: prediction values and ports, the inference loop, the publish gate.

What ships to inference code and decides what inference sees. May import
:mod:`driftd.learning`, :mod:`driftd.decode`, :mod:`driftd.ports` and :mod:`driftd.records`;
never Kafka, Prometheus or an adapter (those implement its ports).
"""
