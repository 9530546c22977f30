"""Model modules: each registers its ModelSpec with xopt.registry at import."""
