"""The data path: an HTTP/2 frame relay that routes and balances each gRPC call."""
