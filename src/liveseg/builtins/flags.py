"""Built-in flags plugin module (filled in by its feature)."""
