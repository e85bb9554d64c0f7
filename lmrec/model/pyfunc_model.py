"""The registered model, from code: MLflow stores this file with the model and runs it on load
(``mlflow.models.set_model``), so a model version holds readable code and arrays, never a pickle.
The ``lmrec`` package travels with the model (``code_paths``), so it loads outside this repository."""

import mlflow

from lmrec.model.pyfunc import LmrecScorer

mlflow.models.set_model(LmrecScorer())
