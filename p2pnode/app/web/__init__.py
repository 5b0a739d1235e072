"""The desktop app the node serves to the user\x27s browser (see docs/app.md)."""
