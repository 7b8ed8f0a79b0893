"""A/B tests of model versions and ranking settings: sessions split by hash, per-arm
click-through and add-to-cart rates with confidence intervals, stop or promote."""
