"""Figures of a trained CVAE: the data each shows (computed with torch) and drawing it (matplotlib)."""
