"""stars-edge runtime: stream tiles of large GeoTIFFs through per-pattern engines (never imports torch).

```python
from runtime import Predictor
summary = Predictor("engines/").predict_scene(optical="opt.tif", sar="sar.tif", out="pred.tif")
```
"""

from runtime.predictor import Predictor, RunSummary
from runtime.row_stream import RowBlock, RowResult
from runtime.sources import ArraySource, RasterSource
from runtime.tiling import TileGrid, blend_window

__all__ = [
    "ArraySource",
    "Predictor",
    "RasterSource",
    "RowBlock",
    "RowResult",
    "RunSummary",
    "TileGrid",
    "blend_window",
]
