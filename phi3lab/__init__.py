"""phi3lab: the companion package of the Phi-3 fine-tuning course."""

from .errors import Phi3LabError, install_notebook_handler

__version__ = "0.1.0"
__all__ = ["Phi3LabError", "__version__"]

install_notebook_handler()
