"""streamdetect: MirrorCheck (arXiv 2406.09250) as a Kafka stream detector.

Parts (see DESIGN.md): ``events`` wire formats, ``images`` reference resolution, ``models``
loading, ``detector`` scoring, ``pipeline`` micro-batched stages, ``stream`` Kafka, ``cli``.
"""

__version__ = "0.1.0"
