"""The command line: the only place argv is read."""
