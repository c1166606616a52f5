"""Timing: step-time loops, calibration, reports, the GPU sweep, tracking overhead."""
