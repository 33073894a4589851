"""The ``imsp2p`` command: the client of providers and consumers, and the operator's tool."""
