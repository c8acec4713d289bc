"""Routing: which provider a delivery goes to."""
