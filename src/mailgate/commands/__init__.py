"""The subcommands of ``mailgate``, a module per subject (cli.py adds them to the command)."""
