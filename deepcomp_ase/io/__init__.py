"""Reading DeePMD-kit model files into plain dictionaries (the DeePMD-kit serialization tree)."""

from .load import read_model_tree

__all__ = ["read_model_tree"]
