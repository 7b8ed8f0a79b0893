"""The embedding engine in the admin: model versions (versions.py), fine-tuning jobs
(training.py), and products' embedding status (products.py)."""

from embeddings.admin import products, training, versions

__all__ = ["products", "training", "versions"]
