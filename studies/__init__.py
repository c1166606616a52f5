"""Optuna studies over the CVAE variants, tracked in MLflow; also home of the command line.

One concept per module: ``spec`` (:class:`StudySpec`, the one declaration of a study's settings),
``runner`` (one invocation on one study), ``objective`` (one trial), ``search_space``, ``storage``,
``lock``, ``trial_loop`` (run until the study holds N finished trials), ``plots``, ``suite`` (every
variant, one table), ``report`` (trials joined with their MLflow runs), ``throughput``
(``python -m studies.throughput``). The commands live in ``studies.cli``, which nothing here imports.
"""
