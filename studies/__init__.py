"""Optuna studies over the CVAE variants, tracked in MLflow; also home of the command line."""
