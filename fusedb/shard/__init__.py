"""Shards: a lock, an arena of leaf buffers, and the worker that merges and splits."""
