"""Services a running node offers on top of its channels (groups, ...)."""
