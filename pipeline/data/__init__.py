"""Data lake: official-layout readers, synthetic datasets, shards, catalog and loaders."""
