"""The int8 image graph on ONNX Runtime: the CPU default where shipped calibration holds,
close to the float model's vectors, cached beside the float export, and switchable off."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embeddings.ml.onnx_runtime import export_dir
from tests.factories import photo_marked


def _int8_kernels() -> str | None:
    from embeddings.ml.onnx_int8 import int8_kernels

    return int8_kernels()


needs_int8_cpu = pytest.mark.skipif(
    _int8_kernels() is None,
    reason="this CPU has neither 8-bit dot products nor AVX2: the image graph stays float",
)
#: How close int8 image vectors stay to float ones on real photos (mean, min cosine), per
#: kind of int8 kernels: measured 0.9963 / 0.9906 with dot products, 0.9903 / 0.9701 with
#: 7-bit weights on an AVX2-only CPU.
REAL_PHOTO_AGREEMENT = {"dot": (0.993, 0.98), "avx2": (0.985, 0.96)}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:  # type: ignore[type-arg]
    """The default model on PyTorch and on ONNX Runtime with its default (int8) image graph."""
    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model

    onnx_dir = tmp_path_factory.mktemp("onnx")
    eager = Encoder(load_model("default"), device="cpu")
    int8 = Encoder(load_model("default"), device="cpu", onnx_dir=onnx_dir)
    yield eager, int8, onnx_dir
    eager.close()
    int8.close()


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@needs_int8_cpu
def test_the_cpu_default_runs_the_image_graph_in_int8(encoders) -> None:  # type: ignore[no-untyped-def]
    _, int8, onnx_dir = encoders
    assert int8.backend == "onnxruntime-int8"
    assert len(list(export_dir(onnx_dir, int8.weights_sha256).glob("image.int8-*.onnx"))) == 1


@needs_int8_cpu
@pytest.mark.datasets
def test_int8_vectors_agree_with_the_eager_model_on_real_photos(encoders, datasets_root) -> None:  # type: ignore[no-untyped-def]
    """With dot products quantizing the stem too gives 0.989 / 0.968, per-tensor weights
    0.964 / 0.929, ranges off by 3x 0.20 / 0.07: each fails here."""
    eager, int8, _ = encoders
    photos = sorted((datasets_root / "clothing" / "images").glob("*.jpg"))[:12]
    photos += sorted((datasets_root / "hm" / "images").glob("*.jpg"))[:12]
    cos = _cosines(eager.encode_images(photos).vectors, int8.encode_images(photos).vectors)
    mean, worst = REAL_PHOTO_AGREEMENT[str(_int8_kernels())]
    assert cos.mean() >= mean and cos.min() >= worst

    # Fused vectors read the image's embedding and grid tokens: measured 0.9947 min.
    texts = ["a photo of a black t-shirt"] * len(photos)
    a, b = eager.encode_items(photos, texts), int8.encode_items(photos, texts)
    assert _cosines(a.vectors, b.vectors).min() >= 0.99


@needs_int8_cpu
def test_int8_vectors_agree_with_the_eager_model_on_drawn_photos(encoders) -> None:  # type: ignore[no-untyped-def]
    """Flat drawn squares are harder than photos (measured 0.986 mean / 0.958 min); a
    per-tensor or mis-ranged quantization gives 0.88 / 0.83 or worse."""
    eager, int8, _ = encoders
    photos = [
        photo_marked(None, colour, size=size)
        for colour, size in [
            ((10, 120, 200), 120),
            ((200, 30, 30), 160),
            ((240, 240, 240), 200),
            ((30, 30, 30), 96),
            ((120, 200, 60), 180),
            ((250, 200, 10), 160),
        ]
    ]
    cos = _cosines(eager.encode_images(photos).vectors, int8.encode_images(photos).vectors)
    assert cos.mean() >= 0.97 and cos.min() >= 0.93


@needs_int8_cpu
def test_the_int8_graph_is_made_once_and_reused(encoders) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml.encoder import Encoder

    _, int8, onnx_dir = encoders
    (graph,) = export_dir(onnx_dir, int8.weights_sha256).glob("image.int8-*.onnx")
    before = graph.stat().st_mtime_ns
    again = Encoder(int8.loaded, device="cpu", onnx_dir=onnx_dir)
    assert again.backend == "onnxruntime-int8"
    assert graph.stat().st_mtime_ns == before
    assert not [
        p for p in export_dir(onnx_dir, int8.weights_sha256).iterdir() if p.name.startswith(".")
    ]


def test_the_switch_goes_back_to_the_float_graph(encoders, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml.encoder import Encoder

    eager, int8, onnx_dir = encoders
    monkeypatch.setenv("VITRINE_ENCODER_INT8", "0")
    float_encoder = Encoder(int8.loaded, device="cpu", onnx_dir=onnx_dir)
    assert float_encoder.backend == "onnxruntime"
    photo = photo_marked(None, (120, 60, 30), size=160)
    a, b = eager.encode_images([photo]), float_encoder.encode_images([photo])
    cos = _cosines(a.vectors, b.vectors)
    assert cos.min() >= 0.999


def test_a_bad_switch_value_fails_loudly(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from embeddings.ml.encoder import int8_wanted

    monkeypatch.setenv("VITRINE_ENCODER_INT8", "fast")
    with pytest.raises(ValueError, match="VITRINE_ENCODER_INT8"):
        int8_wanted()


def test_a_model_without_shipped_calibration_stays_float(encoders) -> None:  # type: ignore[no-untyped-def]
    """v1's trunk (trained from scratch) has no shipped ranges."""
    from embeddings.ml.loading import load_model
    from embeddings.ml.onnx_int8 import calibration_file

    _, int8, _ = encoders
    assert calibration_file(load_model("default:v1")) is None
    assert calibration_file(int8.loaded) is not None


@needs_int8_cpu
def test_ranges_that_miss_the_exported_tensors_leave_the_graph_float(  # type: ignore[no-untyped-def]
    encoders, tmp_path, monkeypatch
) -> None:
    """A calibration file from another export (other tensor names) must never be applied."""
    from embeddings.ml import onnx_int8
    from embeddings.ml.onnx_runtime import ort_model_load

    _, int8, onnx_dir = encoders
    shipped = onnx_int8.calibration_file(int8.loaded)
    assert shipped is not None
    payload = json.loads(shipped.read_text())
    payload["ranges"]["data"] = {
        f"renamed{name}": r for name, r in payload["ranges"]["data"].items()
    }
    (tmp_path / shipped.name).write_text(json.dumps(payload))
    monkeypatch.setattr(onnx_int8, "CALIBRATION_DIR", tmp_path)
    ort = ort_model_load(int8.loaded, Path(onnx_dir), threads=1, int8=True)
    assert not ort.image_int8


def test_a_cpu_without_int8_kernels_runs_the_float_graph(encoders, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """(The hardware is the outside world here: what the CPU reports is what is replaced.)"""
    from embeddings.ml import onnx_int8
    from embeddings.ml.onnx_runtime import ort_model_load

    _, int8, onnx_dir = encoders
    monkeypatch.setattr(onnx_int8, "int8_kernels", lambda: None)
    assert not ort_model_load(int8.loaded, Path(onnx_dir), threads=1, int8=True).image_int8


def test_an_avx2_cpu_without_dot_products_gets_7_bit_weights(  # type: ignore[no-untyped-def]
    encoders, monkeypatch, tmp_path
) -> None:
    """Without dot products x86 sums u8 x s8 pairs in saturating 16 bits: weights of 8 bits
    overflow (on an AVX2-only EPYC the worst held-out photo fell to 0.961), 7 bits do not.
    A CPU with dot products keeps 8 bits, in a file of its own."""
    import onnx
    from onnx import numpy_helper

    from embeddings.ml import onnx_int8

    _, int8, onnx_dir = encoders
    loaded = int8.loaded
    # A copy of the module's export (with this CPU's int8 graph: only the other is made),
    # so the other tests still find one int8 graph there.
    folder = tmp_path / "export"
    shutil.copytree(export_dir(Path(onnx_dir), loaded.weights_sha256), folder)

    def weights_reach(kernels: str) -> tuple[Path, int]:
        monkeypatch.setattr(onnx_int8, "int8_kernels", lambda: kernels)
        graph = onnx_int8.int8_image_graph(loaded, folder)
        assert graph is not None
        model = onnx.load(str(graph))
        reach = max(
            int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max())
            for t in model.graph.initializer
            if t.data_type == onnx.TensorProto.INT8
        )
        return graph, reach

    seven_bit, seven_reach = weights_reach("avx2")
    eight_bit, eight_reach = weights_reach("dot")
    assert seven_bit != eight_bit
    assert seven_reach <= 64 < eight_reach


@needs_int8_cpu
def test_a_fine_tunes_grid_term_stays_float_and_the_rest_runs_int8(  # type: ignore[no-untyped-def]
    datasets_root, tmp_path
) -> None:
    """The shipped ranges know nothing of a fine-tune's grid term: its nodes stay float
    (quantizing a node without ranges fails), and the trunk still runs in int8."""
    from dataclasses import replace

    import torch

    from embeddings.ml.encoder import Encoder
    from embeddings.ml.loading import load_model

    loaded = load_model("default")
    loaded.model.add_grid_head()
    assert loaded.model.grid_head is not None
    with torch.no_grad():  # a trained grid term moves the embedding; zeros would hide it
        torch.manual_seed(0)
        loaded.model.grid_head.weight.normal_(std=0.05)
    fine_tuned = replace(
        loaded,
        config={**loaded.config, "fusion": loaded.model.fusion_cfg.to_dict()},
        weights_sha256="grid-term-" + loaded.weights_sha256[:16],
    )
    eager = Encoder(fine_tuned, device="cpu")
    int8 = Encoder(fine_tuned, device="cpu", onnx_dir=tmp_path)
    assert int8.backend == "onnxruntime-int8"
    photos = sorted((datasets_root / "hm" / "images").glob("*.jpg"))[:12]
    cos = _cosines(eager.encode_images(photos).vectors, int8.encode_images(photos).vectors)
    assert cos.min() >= 0.98
    eager.close()
    int8.close()


#: Window vectors of room photos from the int8 scene graph at 480 px vs the eager trunk
#: (mean, min cosine): measured 0.9936 / 0.9706 with dot products (8 IKEA rooms, 384
#: windows). The AVX2 figures are not measured: the image graph's loss from dot to AVX2
#: kernels (about 0.008 mean, 0.02 min) taken off.
SCENE_AGREEMENT = {"dot": (0.99, 0.95), "avx2": (0.98, 0.93)}


@needs_int8_cpu
@pytest.mark.datasets
def test_int8_scene_windows_agree_with_the_eager_trunk_on_rooms(encoders, datasets_root) -> None:  # type: ignore[no-untyped-def]
    """The scene graph runs at sizes the shipped ranges were not measured at (a room at
    480 px, the ranges at 160): its windows must still read as the float trunk's."""
    from embeddings.ml.regions import cells_pool, scene_map_pixels, windows_propose

    eager, int8, onnx_dir = encoders
    assert int8.has_scene_cells and eager.has_scene_cells
    assert len(list(export_dir(onnx_dir, int8.weights_sha256).glob("scene.int8-*.onnx"))) == 1
    cosines = []
    for room in sorted((datasets_root / "ikea" / "rooms").rglob("*.jpg"))[::20][:8]:
        pixels = scene_map_pixels(room.read_bytes(), short_side=480)
        boxes = windows_propose(width=pixels.shape[2], height=pixels.shape[1])
        ours = cells_pool(int8.scene_cells(pixels), boxes)
        cosines.append((ours * cells_pool(eager.scene_cells(pixels), boxes)).sum(1))
    cos = np.concatenate(cosines)
    mean, worst = SCENE_AGREEMENT[str(_int8_kernels())]
    assert cos.mean() >= mean and cos.min() >= worst
