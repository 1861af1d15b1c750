"""Key-range routing: which leaf (and so which shard) owns a key."""
