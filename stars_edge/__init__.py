"""stars-edge: STARS missing-modality segmentation for remote sensing, compiled for the edge.

Importing this package (and its torch-free modules: ``modalities``, ``errors``, ``config``, ``metrics``,
``io``, ``manifest``) never imports torch, so the runtime installs and runs on devices without PyTorch.
"""

__version__ = "0.1.0"
