"""The TensorRT Python API this project is written against, checked per supported release without a GPU.

TensorRT's libraries (and a GPU) are absent from this project's machines, so ``tensorrt`` cannot be imported
in the tests. What can be checked is the *API surface*: ``extract_names.py`` reads the names NVIDIA's official
bindings wheels bind (one sorted list per release in ``names/``, checked in), and ``surface.py`` collects, by
AST, every ``tensorrt`` (and cuda-python runtime) attribute the project's code uses and reports the ones a
supported release does not bind (``tests/test_tensorrt_api_surface.py``). It catches a call removed in
TensorRT 10 or 11 (``execute_async_v2``, ``build_engine``, ``EXPLICIT_BATCH``, the INT8 calibrators); it does
not check argument types or behaviour, which only the ``tensorrt``-marked tests on a GPU do.
"""

from __future__ import annotations

from pathlib import Path

#: Releases whose bound names are checked in, and why each is supported. JetPack 6 ships TensorRT 10.3 (its
#: aarch64 bindings are not on PyPI; the x86_64 wheel of the same release binds the same names).
SUPPORTED_VERSIONS: dict[str, str] = {
    "10.3.0": "JetPack 6 (Jetson Orin)",
    "10.16.1.11": "newest TensorRT 10",
    "11.4.0.106": "newest TensorRT 11",
}

NAMES_DIR = Path(__file__).resolve().parent / "names"


def names_file(version: str) -> Path:
    """The checked-in name list of one TensorRT release."""
    return NAMES_DIR / f"tensorrt-{version}.txt"
