"""The `bosun` command line."""
