"""The write-ahead log: record format, the shared-memory ring writers append to,
the WAL writer that moves the ring to files, the reader and recovery."""
