"""Offline tools over labelled images and audit logs: evaluation, its report, calibration."""
