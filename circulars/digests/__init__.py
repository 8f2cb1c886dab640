"""Partner digests: when each list's digests are due, what they hold, and sending them."""
