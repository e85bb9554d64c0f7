"""Names, settings, the Spark session, Delta I/O and point-in-time helpers."""
