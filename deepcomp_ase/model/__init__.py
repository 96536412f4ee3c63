"""In-memory description of a DeePMD-kit energy model (weights as numpy arrays)."""
