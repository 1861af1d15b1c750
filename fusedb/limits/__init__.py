"""The `limits` storage for FuseDB (being built: issue 13)."""
