"""lmrec: nightly batch recommendations."""
