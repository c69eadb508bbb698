"""Adapters: the edges of driftd (Kafka, snapshot stores, Prometheus, the embedded broker)."""
