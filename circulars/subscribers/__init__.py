"""Subscribers: addresses, signed links, imports and the subscription rules."""
