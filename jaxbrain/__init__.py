"""jaxbrain: how brain-like is a vision model, and how to make it more so, in JAX/Flax."""

__version__ = "0.1.0"
