"""onnxprune: remove whole convolution filters from ONNX CNNs and SSD detectors.

Implements the multi-layer pruning framework of Singh et al. (WACV 2019) on ONNX graphs:
`analyze` lists a model's channel groups, `prune` selects filters with Algorithm 1 at a global
threshold and removes them exactly; `stats` holds the native weight statistics.
"""

from onnxprune import stats
from onnxprune.commands import analyze, prune
from onnxprune.selection import Criteria, PrunePlan

__all__ = ["Criteria", "PrunePlan", "__version__", "analyze", "prune", "stats"]
__version__ = "0.1.0"
