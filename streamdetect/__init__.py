"""streamdetect: MirrorCheck (arXiv 2406.09250) as a Kafka stream detector.

One folder per part (docs/architecture.md): ``events`` wire formats, ``images`` image
references, ``models`` loading, ``detector`` scoring, ``pipeline`` micro-batched stages,
``stream`` the Kafka worker, ``app`` the wiring, ``offline`` evaluation and calibration,
``mini`` the trained demo world, ``bench``, ``demo``, ``cli``.
"""

__version__ = "0.1.0"
