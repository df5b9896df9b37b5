"""The Engine protocol, its registry (entry points) and one module per backend."""
