"""Kafka: the faust worker, offsets, publishing, topic admin and user clients. Knows no torch."""
