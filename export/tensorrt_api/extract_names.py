"""Write ``names/tensorrt-<version>.txt``: every name NVIDIA's official TensorRT Python bindings bind.

    python -m export.tensorrt_api.extract_names                 # the releases in SUPPORTED_VERSIONS
    python -m export.tensorrt_api.extract_names --newest        # what PyPI has now: 10.3, newest 10.x, 11.x
    python -m export.tensorrt_api.extract_names --versions 10.9.0.34 --out /tmp/names

Why it lives in ``export/tensorrt_api/``: the lists describe the API that ``export/tensorrt_build.py`` and the
runtime's TensorRT backend are written against, so they sit beside that code, and ruff/mypy cover the script
with the package. It is a maintainer's tool, run when a TensorRT release is added (needs PyPI and a C
compiler); the tests only read the checked-in lists.

How, without TensorRT's libraries or a GPU: ``pip download --no-deps tensorrt-cu12-bindings==V`` (the wheel
for this interpreter) into a temporary folder. Its compiled module links ``libnvinfer``, ``libnvonnxparser``
and ``libnvinfer_plugin``, which cannot be installed here (``tensorrt-cu12-libs`` downloads them from NVIDIA's
own host), but it calls into them only when an object is created, never while registering its classes. So
empty stand-in libraries with those sonames, defining the few C entry points the module imports
(``createInferBuilder_INTERNAL``, ...; read with ``nm``), let it import, and a child process walks it with
``dir()``: classes, nested classes, enum members, methods, properties and module functions, with the class a
method or property returns where its pybind11 signature names one (so the AST checker can follow
``builder.create_network(...)`` to ``INetworkDefinition``). Reading the binary's strings would give names
without knowing which class owns them; importing it gives the exact structure.

Line format, sorted: ``<dotted name> <kind>[ -> <class>]`` with kind one of class, method, property, value,
function, module; e.g. ``Builder.create_network method -> INetworkDefinition``,
``BuilderFlag.FP16 value -> BuilderFlag``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from export.tensorrt_api import SUPPORTED_VERSIONS, names_file

PACKAGE = "tensorrt-cu12-bindings"

#: Runs in the child process, with the stand-in libraries on LD_LIBRARY_PATH; prints one JSON document.
_WALK = r"""
import importlib, inspect, json, re, sys, types
module = importlib.import_module(sys.argv[1])
own = module.__name__
classes = {}
def qualname(cls):
    return cls.__qualname__ if getattr(cls, "__module__", "").split(".")[0] == own else None
def walk_classes(obj, depth):
    for attr in dir(obj):
        try:
            value = getattr(obj, attr)
        except Exception:
            continue
        if isinstance(value, type) and qualname(value) and qualname(value) not in classes:
            classes[qualname(value)] = value
            if depth < 3:
                walk_classes(value, depth + 1)
walk_classes(module, 0)
known = set(classes)
def resolve(text):
    text = text.strip()
    for wrapper in ("typing.Optional[", "Optional["):
        if text.startswith(wrapper) and text.endswith("]"):
            text = text[len(wrapper):-1]
    text = re.sub(r"\s*\|\s*None$", "", text)
    if not re.fullmatch(r"[A-Za-z_][\w.]*", text):
        return None
    parts = text.split(".")
    for start in range(len(parts)):
        candidate = ".".join(parts[start:])
        if candidate in known:
            return candidate
    return None
def returns(name, doc):
    found = set()
    for line in (doc or "").splitlines():
        match = re.match(r"^(?:\d+\.\s+)?" + re.escape(name) + r"\(.*\)\s*->\s*(.+)$", line.strip())
        if match:
            found.add(resolve(match.group(1)))
    return found.pop() if len(found) == 1 else None
def describe(name, value):
    if isinstance(value, types.ModuleType):
        return "module", None
    if isinstance(value, type):
        return "class", None
    if isinstance(value, property):
        doc = value.fget.__doc__ if value.fget is not None else ""
        match = re.search(r"->\s*(.+)$", (doc or "").strip().splitlines()[0] if doc and doc.strip() else "")
        return "property", resolve(match.group(1)) if match else None
    if callable(value):
        ret = returns(name, getattr(value, "__doc__", ""))
        if ret is None and inspect.isfunction(value):
            annotation = inspect.signature(value).return_annotation
            if isinstance(annotation, type):
                ret = qualname(annotation)
        return "callable", ret
    return "value", qualname(type(value))
rows = {}
def members(obj, prefix, depth, top):
    for attr in dir(obj):
        if attr.startswith("_") and not (top and attr == "__version__"):
            continue
        try:
            value = getattr(obj, attr)
        except Exception:
            continue
        kind, ret = describe(attr, value)
        if kind == "callable":
            kind = "function" if top or isinstance(value, staticmethod) else "method"
        rows[prefix + attr] = (kind, ret)
        if kind == "class" and qualname(value) and depth < 3:
            members(value, prefix + attr + ".", depth + 1, False)
members(module, "", 0, True)
print(json.dumps({"version": str(module.__version__), "rows": rows}))
"""


class ExtractError(RuntimeError):
    """A step of the extraction failed (download, stand-in libraries, import); the message says which."""


def _run(
    command: Sequence[str], what: str, env: dict[str, str] | None = None, timeout: float | None = None
) -> str:
    """stdout of ``command``, or ExtractError with its stderr."""
    result = subprocess.run(
        list(command), capture_output=True, text=True, check=False, env=env, timeout=timeout
    )
    if result.returncode != 0:
        raise ExtractError(f"{what} failed ({' '.join(command)}):\n{result.stderr.strip()[-2000:]}")
    return str(result.stdout)


def download_wheel(version: str, folder: Path) -> Path:
    """``pip download --no-deps`` of the bindings wheel for this interpreter; returns the wheel."""
    _run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "--dest", str(folder), f"{PACKAGE}=={version}"],
        f"downloading {PACKAGE}=={version}",
    )  # fmt: skip
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise ExtractError(f"expected one wheel for {PACKAGE}=={version} in {folder}, found {wheels}")
    return wheels[0]


def stand_in_libraries(extension: Path, folder: Path) -> None:
    """Empty libraries with the sonames ``extension`` needs from TensorRT, defining the symbols it imports."""
    if shutil.which("cc") is None or shutil.which("nm") is None or shutil.which("readelf") is None:
        raise ExtractError("needs a C compiler (cc) and binutils (nm, readelf): apt-get install gcc binutils")
    dynamic = _run(["readelf", "-d", str(extension)], f"reading {extension.name}")
    sonames = [s for s in re.findall(r"Shared library: \[(.+?)\]", dynamic) if s.startswith("libnv")]
    undefined = _run(["nm", "-D", "--undefined-only", str(extension)], f"listing {extension.name}")
    import ctypes

    process = ctypes.CDLL(None)
    symbols = sorted(
        name
        for kind, name in (line.split()[-2:] for line in undefined.splitlines() if line.strip())
        if kind == "U"
        and "@" not in name
        and not name.startswith(("Py", "_Py"))
        and not hasattr(process, name)
    )
    if not sonames or not symbols:
        raise ExtractError(f"{extension} links no TensorRT library ({sonames}, {symbols}); format changed?")
    source = folder / "stand_in.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n" for name in symbols))
    for soname in sonames:
        _run(
            ["cc", "-shared", "-fPIC", "-o", str(folder / soname), f"-Wl,-soname,{soname}", str(source)],
            f"building the stand-in {soname}",
        )


def bound_names(wheel: Path, folder: Path) -> tuple[str, dict[str, tuple[str, str | None]]]:
    """``(version, {name: (kind, returned class)})`` of the bindings in ``wheel``, walked in a child."""
    unpacked = folder / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    (top_level,) = sorted(unpacked.glob("*.dist-info/top_level.txt"))
    package = top_level.read_text().split()[0]
    (extension,) = sorted((unpacked / package).glob("tensorrt*.so"))
    libraries = folder / "lib"
    libraries.mkdir()
    stand_in_libraries(extension, libraries)
    output = _run(
        [sys.executable, "-c", _WALK, package],
        f"importing {package} from {wheel.name} with stand-in libraries",
        env={"LD_LIBRARY_PATH": str(libraries), "PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    data = json.loads(output)
    return data["version"], {name: (kind, ret) for name, (kind, ret) in data["rows"].items()}


def render(version: str, wheel: str, rows: dict[str, tuple[str, str | None]]) -> str:
    """The checked-in text: a header, then one sorted line per name."""
    lines = [f"{name} {kind}" + (f" -> {ret}" if ret else "") for name, (kind, ret) in sorted(rows.items())]
    header = (
        f"# TensorRT {version}: names bound by {wheel}\n"
        "# written by `python -m export.tensorrt_api.extract_names`; format: <name> <kind>[ -> <class>]\n"
    )
    return header + "\n".join(lines) + "\n"


def extract(version: str, out: Path) -> Path:
    """Download, import and list one release; writes ``out/tensorrt-<version>.txt``."""
    with tempfile.TemporaryDirectory(prefix=f"trt-{version}-") as tmp:
        folder = Path(tmp)
        wheel = download_wheel(version, folder / "wheel")
        bound_version, rows = bound_names(wheel, folder)
    if bound_version != version:
        raise ExtractError(f"{wheel.name} reports version {bound_version}, expected {version}")
    path = out / names_file(version).name
    path.write_text(render(version, wheel.name, rows))
    return path


def newest_versions() -> list[str]:
    """10.3.x (JetPack 6) plus the newest release of every major from 10 on, as PyPI lists them now."""
    listing = _run([sys.executable, "-m", "pip", "index", "versions", PACKAGE], "pip index versions")
    match = re.search(r"Available versions:\s*(.+)", listing)
    if match is None:
        raise ExtractError(f"unexpected `pip index versions` output:\n{listing}")
    versions = [v.strip() for v in match.group(1).split(",") if re.fullmatch(r"[\d.]+", v.strip())]

    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split("."))

    chosen = [max((v for v in versions if v.startswith("10.3.")), key=key, default="10.3.0")]
    for major in sorted({key(v)[0] for v in versions if key(v)[0] >= 10}):
        chosen.append(max((v for v in versions if key(v)[0] == major), key=key))
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    """Write one list per release; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m export.tensorrt_api.extract_names", description=__doc__)
    parser.add_argument("--versions", nargs="+", help="releases to list (default: SUPPORTED_VERSIONS)")
    parser.add_argument("--newest", action="store_true", help="10.3 and the newest 10.x, 11.x, ... on PyPI")
    parser.add_argument("--out", type=Path, default=names_file("x").parent, help="folder for the lists")
    args = parser.parse_args(argv)
    try:
        versions = args.versions or (newest_versions() if args.newest else list(SUPPORTED_VERSIONS))
        args.out.mkdir(parents=True, exist_ok=True)
        for version in versions:
            path = extract(version, args.out)
            count = sum(1 for line in path.read_text().splitlines() if not line.startswith("#"))
            print(f"{path}: {count} names")
    except ExtractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if sorted(versions) != sorted(SUPPORTED_VERSIONS):
        print(f"note: update SUPPORTED_VERSIONS in export/tensorrt_api/__init__.py to {versions}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
