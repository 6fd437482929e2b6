"""DELF (seed 003) geometry: receptive fields, box NMS, RANSAC verification."""
