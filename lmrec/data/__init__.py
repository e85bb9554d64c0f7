"""Importers of public datasets and the deterministic demo catalogue (the source format)."""
