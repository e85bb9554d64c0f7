"""Spark's Python daemon for the torch jobs (``spark.python.daemon.module``): it imports torch and
transformers once, before it forks the Python workers, so every worker starts with them loaded
instead of importing them again (seconds per worker). Import only: no torch op runs before the
fork, so no thread pool is inherited by the workers."""

import pyspark.daemon

if __name__ == "__main__":
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoModel, AutoTokenizer  # noqa: F401  (transformers imports lazily)

    pyspark.daemon.manager()
