"""The write-ahead log: record format, the shared-memory ring writers append to,
the flusher that moves the ring to files, the reader and recovery."""
