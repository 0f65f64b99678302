"""Services outside the mesh (the mesh config's `external`): calls to their proto services go
to their addresses, resolved by DNS and balanced like instances, over TLS if configured.

dns.py (what DNS said, when to ask again), table.py (pools, targets and how to dial each
endpoint) and tls.py (client contexts) are pure; resolver.py is the asyncio shell that asks
getaddrinfo. docs/config.md, `external`, describes the behaviour.
"""
