"""Engine calls in flight while the main thread blends (``runtime/pipelining.py``, OpenVINO streams)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import NO_TORCH_PRELUDE
from test_runtime_stride4 import build as build_pooled
from test_runtime_support import build_engines, make_physical, random_weights, write_raster

from runtime import Predictor
from runtime.backends import OpenVINOBackend
from runtime.engines import EngineSet
from runtime.pipelining import EnginePipeline, Together
from runtime.run_options import default_streams
from runtime.scheduling import EngineUse, PreparedTile
from stars_edge.errors import ConfigError
from stars_edge.modalities import ALL_PATTERNS, Pattern

pytestmark = pytest.mark.skipif(not OpenVINOBackend.is_available(), reason="needs openvino")

CLASSES = 4
FULL_PATTERN = ALL_PATTERNS[0]  # optical+sar+dsm


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Engines with 3x3 context at stride 1 (``logits_stride`` 1) and pooled engines at stride 4."""
    root = tmp_path_factory.mktemp("pipelining")
    return {
        1: build_engines(root / "s1", random_weights(CLASSES, seed=5), CLASSES, kernel=3, context_margin=4),
        4: build_pooled(root / "s4", 4, kernel=3),
    }


def _scene() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    """A 300 x 260 px scene with a cloud, a SAR swath gap and a DSM void: tiles with several patterns."""
    inputs = make_physical((300, 260), seed=11)
    valid = {m: np.ones((300, 260), dtype=bool) for m in inputs}
    valid["sar"][:, 200:] = False
    valid["dsm"][40:70, 30:90] = False
    clouds = np.zeros((300, 260), dtype=bool)
    clouds[120:190, 60:150] = True
    return inputs, valid, clouds


class InFlight:
    """Counts ``EngineSet.run`` calls running at once (the real calls, held a little longer)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = self.most = 0
        self._lock = threading.Lock()
        real = EngineSet.run

        def run(engines: EngineSet, pattern: Pattern, inputs: Any) -> np.ndarray:
            with self._lock:
                self.now += 1
                self.most = max(self.most, self.now)
            try:
                time.sleep(0.005)
                return real(engines, pattern, inputs)
            finally:
                with self._lock:
                    self.now -= 1

        monkeypatch.setattr(EngineSet, "run", run)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
@pytest.mark.parametrize("stride", [1, 4])
@pytest.mark.parametrize("batch", [1, 3])
def test_streams_give_the_maps_of_one_call_at_a_time(
    engines: dict[int, Path], backend: str, stride: int, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two streams with calls in flight while the last results blend: the same class and pattern maps as
    one stream and one call at a time, on a scene whose tiles hold several patterns (windows too)."""
    inputs, valid, clouds = _scene()
    options: dict[str, Any] = {"tile": 64, "overlap": 16, "batch": batch}
    with Predictor(engines[stride], backend=backend, streams=1) as one:
        want, want_patterns = one.predict_arrays(inputs, valid=valid, cloud_mask=clouds, **options)
    counter = InFlight(monkeypatch)
    with Predictor(engines[stride], backend=backend, streams=2) as two:
        got, got_patterns = two.predict_arrays(inputs, valid=valid, cloud_mask=clouds, **options)
    assert len(np.unique(want_patterns)) >= 4
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got_patterns, want_patterns)
    assert counter.most == 2  # calls really overlapped, and never more than the streams


def test_the_run_summary_says_how_many_calls_were_in_flight(engines: dict[int, Path], tmp_path: Path) -> None:
    inputs, _, _ = _scene()
    from rasterio.transform import from_origin

    grid = from_origin(500000, 4000000, 10, 10)
    paths = {m: write_raster(tmp_path / f"{m}.tif", a, grid) for m, a in inputs.items()}
    for streams in (1, 2):
        with Predictor(engines[4], backend="openvino", streams=streams) as predictor:
            summary = predictor.predict_scene(
                **paths, out=tmp_path / f"out{streams}.tif", tile=64, overlap=16
            )
        assert summary.engine_streams == streams and summary.to_dict()["engine_streams"] == streams
        assert f"{streams} call(s) in flight" in summary.format()


def test_one_stream_runs_one_call_at_a_time(
    engines: dict[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs, valid, clouds = _scene()
    counter = InFlight(monkeypatch)
    with Predictor(engines[4], backend="onnxruntime", streams=1) as predictor:
        predictor.predict_arrays(inputs, valid=valid, cloud_mask=clouds, tile=64, overlap=16)
    assert counter.most == 1


BANDS = (("optical", 4), ("sar", 2), ("dsm", 1))


def _tile(col: int, value: float) -> PreparedTile:
    inputs = {m: np.full((b, 8, 8), value, dtype=np.float32) for m, b in BANDS}
    return PreparedTile(0, col, inputs, np.full((8, 8), 7, dtype=np.uint8))  # code 7: every modality


class SlowFirst:
    """Engines stand-in with two streams: logits carry the input's value; earlier calls take longer, so
    results finish out of order; a value of -1 fails like a rejected input."""

    concurrency = 2

    def run(self, pattern: Pattern, inputs: Any) -> np.ndarray:
        value = float(inputs["optical"][0, 0, 0, 0])
        if value < 0:
            raise ValueError("rejected")
        time.sleep(0.05 / (1.0 + value))
        return np.full((1, CLASSES, 8, 8), value, dtype=np.float32)


def test_pipeline_hands_results_back_in_submission_order() -> None:
    pipeline = EnginePipeline(SlowFirst(), 1, 0, 1)  # type: ignore[arg-type]
    taken = []
    try:
        for value in range(6):
            pipeline.submit([_tile(value, float(value))], EngineUse())
            while pipeline.full():
                _, tiles, logits = pipeline.take()
                taken.append((tiles[0].col, float(logits[0][0, 0, 0])))  # type: ignore[index]
        assert len(pipeline) == 2  # one group per stream still in flight
        while len(pipeline):
            _, tiles, logits = pipeline.take()
            taken.append((tiles[0].col, float(logits[0][0, 0, 0])))  # type: ignore[index]
    finally:
        pipeline.close()
    assert taken == [(v, float(v)) for v in range(6)]


def test_pipeline_raises_an_engine_error_where_its_group_is_taken() -> None:
    pipeline = EnginePipeline(SlowFirst(), 1, 0, 1)  # type: ignore[arg-type]
    try:
        pipeline.submit([_tile(0, 1.0)], EngineUse())
        pipeline.submit([_tile(1, -1.0)], EngineUse())
        pipeline.submit([_tile(2, 2.0)], EngineUse())
        assert pipeline.take()[1][0].col == 0
        with pytest.raises(ValueError, match="rejected"):
            pipeline.take()
    finally:
        pipeline.close()  # drops the group not taken and returns: nothing left running
    assert len(pipeline) == 0


def test_openvino_streams_run_calls_from_threads_on_their_own_requests(engines: dict[int, Path]) -> None:
    """Each thread gets the logits of its own inputs (one infer request per stream, never shared)."""
    path = engines[1] / f"{FULL_PATTERN}.fp32.onnx"
    rng = np.random.default_rng(0)
    feeds = [{m: rng.normal(size=(1, b, 32, 32)).astype(np.float32) for m, b in BANDS} for _ in range(8)]
    alone = OpenVINOBackend(path)
    want = [alone.run(feed) for feed in feeds]
    engine = OpenVINOBackend(path, streams=2)
    assert engine.concurrency == 2
    got: list[np.ndarray | None] = [None] * len(feeds)

    def work(index: int) -> None:
        for _ in range(5):
            got[index] = engine.run(feeds[index])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(feeds))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for have, expected in zip(got, want, strict=True):
        np.testing.assert_array_equal(have, expected)


def test_first_calls_of_several_streams_at_once_do_not_deadlock(engines: dict[int, Path]) -> None:
    """Threads making a fresh process's first OpenVINO calls at the same moment deadlocked inside pybind11's
    numpy bridge before ``_core`` initialised it once (2 of 6 fresh processes with 4 streams hung without
    it): fresh processes, a barrier, a timeout."""
    path = engines[1] / f"{FULL_PATTERN}.fp32.onnx"
    script = NO_TORCH_PRELUDE + textwrap.dedent(
        f"""
        import threading
        import numpy as np
        from runtime.backends import OpenVINOBackend
        engine = OpenVINOBackend({str(path)!r}, streams=4)
        feed = {{m: np.zeros((2, b, 64, 64), np.float32) for m, b in {BANDS!r}}}
        start = threading.Barrier(4)
        def first_call():
            start.wait()
            engine.run(feed)
        threads = [threading.Thread(target=first_call) for _ in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("ok")
        """
    )
    for _ in range(6):
        try:
            done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("four streams' first calls at once deadlocked")
        assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_together_times_as_many_calls_as_streams() -> None:
    calls = []
    with Together(lambda: calls.append(threading.get_ident()), 2) as together:
        together()
        together()
    assert len(calls) == 4
    with Together(lambda: calls.append(threading.get_ident()), 1) as alone:
        alone()
    assert calls[-1] == threading.get_ident()  # one call: on the caller's thread


def test_default_streams_and_their_checks(engines: dict[int, Path]) -> None:
    assert default_streams("openvino") == default_streams("onnxruntime") == 2
    assert default_streams("openvino", threads=1) == 1  # a stream needs a thread of its own
    assert default_streams("tensorrt") == 1
    with pytest.raises(ConfigError, match="--streams"):
        Predictor(engines[1], streams=0)
    with Predictor(engines[1], backend="openvino") as predictor:
        assert predictor._engine_set([FULL_PATTERN], None).concurrency == 2
    with Predictor(engines[1], backend="openvino", threads=1) as predictor:
        assert predictor._engine_set([FULL_PATTERN], None).concurrency == 1
