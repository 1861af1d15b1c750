"""Shared-memory structures: named regions, arenas of buffer slabs, the meta block."""
