"""`cbir train`: the one training loop (loop.py), what every run shares (setup.py), and
one module per method objective."""
