"""Codat's API: the client, platform keys, and reading Codat's connection JSON."""
