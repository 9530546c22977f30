"""Model packages: one folder per model, each registering its spec."""
