"""Many scenes on Dask distributed: the library behind ``stars-edge run-batch``.

```python
from runtime.batch import run_batch
result = run_batch("engines/", "scenes.csv", "out/", workers=2)     # or scheduler="tcp://host:8786"
for scene in result.scenes:
    print(scene.id, scene.status, scene.error, scene.mpx_per_s)
```

Dask is imported only when a batch runs, so ``runtime`` itself does not need it.
"""

from runtime.batch.runner import BatchInterrupted, BatchResult, local_cluster_size, run_batch
from runtime.batch.scenes import Scene, parse_assets, read_scenes
from runtime.batch.summary import SceneResult
from runtime.batch.task import BatchSettings, output_paths, record_path, run_scene, verify_scene

__all__ = [
    "BatchInterrupted",
    "BatchResult",
    "BatchSettings",
    "Scene",
    "SceneResult",
    "local_cluster_size",
    "output_paths",
    "parse_assets",
    "read_scenes",
    "record_path",
    "run_batch",
    "run_scene",
    "verify_scene",
]
