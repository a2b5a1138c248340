"""onnxprune: remove whole convolution filters from ONNX CNNs and SSD detectors.

Implements the multi-layer pruning framework of Singh et al. (WACV 2019) on ONNX graphs. The
public API grows with the pipeline; today it holds the native weight statistics (`stats`).
"""

from onnxprune import stats

__all__ = ["__version__", "stats"]
__version__ = "0.1.0"
