"""The native InfiniteTalk backend (Wan2.1 I2V 14B + InfiniteTalk audio conditioning) on PyTorch; needs torch."""
