"""Measuring detection on the mini domain: the evaluation table (``run``), the baseline
detectors it compares with (``baselines``) and the pictures it draws (``show``)."""
