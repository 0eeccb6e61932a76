"""Data in: reading interaction files (formats), preparing a dataset directory (prepare,
synthetic) and loading it as tensors (dataset)."""
