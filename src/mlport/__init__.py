"""mlport: serve trained model files as fast, versioned, observable web services."""

__version__ = "0.1.0"
__all__ = ["__version__"]
