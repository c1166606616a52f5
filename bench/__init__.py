"""The harness: data, the training and evaluation loop, metrics, MLflow tracking, step timing."""
