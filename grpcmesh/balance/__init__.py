"""Endpoints, pools and pickers: pure objects, no sockets."""
