"""Embeddings: the framework-free model package (`embeddings.ml`) and its Django layer."""
