"""lmrec: the library the nightly jobs share (``jobs/`` holds one thin module per DAG task).

Sub-packages by concern: ``core`` (names, settings, Spark, Delta I/O, point in time), ``data``
(importers, demo catalogue), ``text`` (encoder, text builders, the embedding job's logic),
``model`` (scorer, baselines, evaluation, the MLflow model and registry). ``pipeline`` is the job
registry and runner; ``cli`` the ``lmrec`` command. See docs/ARCHITECTURE.md.
"""
