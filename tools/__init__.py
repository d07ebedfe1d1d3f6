"""Command-line tools of latentscape (``latentscape.tools``): the CLI and recipes."""
