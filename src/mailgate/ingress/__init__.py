"""Ingresses: they parse and authenticate, then call the one accept()."""
