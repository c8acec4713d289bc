"""What happened: metrics derived from the queue and from this process's work."""
