"""Subcommand groups of ``mailgate`` (cli.py adds them to the command)."""
