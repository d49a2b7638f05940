"""The control API (a root-only unix socket) and its command-line client."""
