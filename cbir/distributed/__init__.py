"""Ray: describing slides on a cluster, workers writing their own segments, sharded
search."""
