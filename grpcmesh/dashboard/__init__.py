"""`grpcmesh dashboard`: a web page of the mesh's golden signals and the balancer's choices
(server.py serves it; summary.py computes what /api/summary says; static/ is the page)."""
