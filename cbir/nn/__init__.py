"""PyTorch parts: devices, weight files, networks, augmentation, training loops."""
