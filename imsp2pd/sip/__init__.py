"""SIP: a sans-IO core (message, parser, uri, headers, transaction, digest)
and thin Twisted adapters (transport, proxy)."""
