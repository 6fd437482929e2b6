"""Faiss indexes over tile codes, vectors and local features: binary (Hamming), float
(L2), local, segmented (many segments searched as one), thread settings, safe writes."""
