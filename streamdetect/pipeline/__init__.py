"""Micro-batched stages that run MirrorCheck on many requests at once. Knows no Kafka.

``batcher`` is the pure-asyncio micro-batcher (no torch); ``engine`` joins three batchers into
the caption -> regenerate -> embed pipeline on one device thread; ``null_models`` are instant
stand-ins for measuring the stream layer alone. Import from the module you need: importing this
package loads nothing, so the batcher stays free of torch.
"""
