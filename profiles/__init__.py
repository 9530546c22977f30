"""Device profiles shipped as package data (TOML files beside this module)."""
