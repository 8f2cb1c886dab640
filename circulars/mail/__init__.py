"""Render once, personalise per recipient, build MIME, hand to a transport."""
