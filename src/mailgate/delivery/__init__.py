"""The delivery loop: scheduler, classification of replies, retry timing."""
