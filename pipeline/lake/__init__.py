"""The data lake: the sample plan, the shard writer and its contract, the preprocessing job, listing, the catalog and the object store."""
