"""Built-in triggers plugin module (filled in by its feature)."""
