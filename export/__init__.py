"""Checkpoint -> one ONNX/TensorRT engine per modality pattern and precision, accuracy-gated, with a manifest.

```python
from export import BuildOptions, build_engines
report = build_engines(BuildOptions(checkpoint="model.pt", out="engines/"))
report.manifest.select("optical+sar", "int8")
```

Heavy dependencies (torch, onnxruntime, tensorrt) are imported by the submodules that need them.
"""

from export.build import BuildOptions, BuildReport, build_engines

__all__ = ["BuildOptions", "BuildReport", "build_engines"]
