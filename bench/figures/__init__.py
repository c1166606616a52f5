"""Figures of a trained CVAE, logged as PNG artifacts of its MLflow run.

- :mod:`bench.figures.kinds`: what each figure shows, as numpy data (:class:`ImageGrid`,
  :class:`TrainingCurves`, :class:`KLPerDim`) and the artifact file of each (:data:`FIGURE_FILES`);
- :mod:`bench.figures.compute`: fills them in from a model (torch; the training process),
  :func:`~bench.figures.compute.fit_figure_data`;
- :mod:`bench.figures.draw`: draws them with matplotlib (Agg; the tracking process),
  :func:`~bench.figures.draw.save_png`;

Importing this package loads neither torch nor matplotlib: the tracking process must never import torch.
"""

from bench.figures.kinds import FIGURE_FILES, FigureData, ImageGrid, KLPerDim, TrainingCurves

__all__ = ["FIGURE_FILES", "FigureData", "ImageGrid", "KLPerDim", "TrainingCurves"]
