"""Errors no retry can fix. A job raises one of these for bad input, a failed check or a bad
parameter; the DAG fails the task at once (no retries) and alerts. Anything else (a lost
executor, a Delta conflict that outlived its retries, an object store hiccup) keeps its retries.
Messages name files, columns, dates and counts, never user text."""


class PermanentError(RuntimeError):
    """An error that the same run, retried, would hit again."""


class SourceError(PermanentError):
    """A source file or column is missing or unreadable; the message names it."""


class RejectionRateError(PermanentError):
    """More rows were rejected than the configured threshold allows (quarantine is written)."""


class ValidationError(PermanentError):
    """Recommendations failed a check; nothing was published."""


class ParameterError(PermanentError, ValueError):
    """A run parameter is out of range or unknown (top_k, retrain policy, …)."""
