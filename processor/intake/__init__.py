"""Receiving webhooks: signature verification, bodies to events, the group-commit writer."""
