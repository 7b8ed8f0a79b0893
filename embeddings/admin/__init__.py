"""The embedding engine in the admin: model versions (versions.py), fine-tuning jobs
(training.py)."""

from embeddings.admin import training, versions

__all__ = ["training", "versions"]
