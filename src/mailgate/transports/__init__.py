"""Transports: how one delivery leaves the relay (SMTP upstream, Maildir capture)."""
