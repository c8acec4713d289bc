"""The dashboard at /ui/: server-rendered pages over the store's read models (app.py).

Kept import-light: config.py imports ui.settings, so nothing here may pull in the web
stack or the configuration."""
