"""The text encoder, the point-in-time text builders and the embedding job logic."""
