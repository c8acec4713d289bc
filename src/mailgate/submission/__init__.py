"""A send request and what it becomes: the request shapes and their preparation into a
Submission, shared by the HTTP API, the compat dialects and the CLI."""
