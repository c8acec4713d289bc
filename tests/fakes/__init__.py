"""Real servers the tests start on loopback: a scriptable upstream SMTP server."""
