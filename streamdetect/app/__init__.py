"""The composition root: the only part that imports both the models and the stream layer.
It turns Settings into loaded models, a pipeline, a judge and the worker's upload handler."""
