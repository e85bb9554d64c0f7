"""The scorer, baselines, evaluation, the MLflow pyfunc and the registry helpers."""
