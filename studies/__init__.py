"""Studies built on aidkd's public API (not part of the installed package)."""
