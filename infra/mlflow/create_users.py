"""Create the pipeline's MLflow user (idempotent): run once after the server is up.

Environment: MLFLOW_TRACKING_URI (the server), MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD
(the admin, as the server has them), MLFLOW_PIPELINE_USERNAME / MLFLOW_PIPELINE_PASSWORD (the user the
Airflow tasks log in as: MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD there). Prints no secret."""

import os
import sys

from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client


def main() -> int:
    missing = [k for k in ("MLFLOW_TRACKING_URI", "MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD",
                           "MLFLOW_PIPELINE_USERNAME", "MLFLOW_PIPELINE_PASSWORD") if not os.environ.get(k)]
    if missing:
        print(f"create_users: set {', '.join(missing)}", file=sys.stderr)
        return 2
    os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"]
    os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
    client = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    user = os.environ["MLFLOW_PIPELINE_USERNAME"]
    try:
        client.get_user(user)
        print(f"create_users: user {user} exists")
    except MlflowException:
        client.create_user(user, os.environ["MLFLOW_PIPELINE_PASSWORD"])
        print(f"create_users: created user {user}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
