"""The hub\x27s web console: pages, static files, sessions and the browser-facing guard."""
