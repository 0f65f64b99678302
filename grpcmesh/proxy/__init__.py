"""The sidecar's data path: catch-all handler, byte pump and upstream channels."""
