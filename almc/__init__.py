"""almc: a declarative graph compiler for neural networks (.alm -> ONNX)."""
__version__ = "0.1.0"


def load(source, **params):
    """Load a model from a .alm path or source text; see almc.api.Model."""
    from .api import load as _load

    return _load(source, **params)
