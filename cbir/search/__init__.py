"""Search: tile queries (Hamming top-k) and region queries (seed 000 d_near)."""
