"""The image graph in int8 for ONNX Runtime on a CPU: static QDQ quantization, cached.

On CPUs with 8-bit dot products (AVX-512 VNNI, AVX-VNNI, ARM dot-product) the int8 image
graph of an EfficientNet trunk runs about twice as fast as the float one. It is made from
the float export (`onnx_runtime.onnx_export`) once per weights checksum and quantization
config, into ``<onnx_dir>/<weights sha256>/image.int8-<config digest>.onnx``.

Static quantization needs the value ranges of the activations, measured on real photos.
A user's machine has no calibration photos when it first loads a model (a fresh install
may not even have a catalog yet), and calibrating on a catalog's first photos would give
every install, and every re-export, slightly different vectors. So the ranges are measured
once, on photos of the CC0 clothing set's training part (`int8_calibrate`, run by
``python -m embeddings.ml int8-calibrate``), and shipped as a small JSON file per image
trunk: `CALIBRATION_DIR/<trunk package>-<image size>.json`. Only the trunk is quantized,
and only a trunk that is the package's own, bit for bit (excluded from the model's
weights), so the ranges hold for every model built on it: the bundled default and its
fine-tunes that keep the trunk frozen. Other models, or ranges that no longer match the
export's tensor names, stay float (with a log line saying why). A fine-tune that tuned the
trunk's last blocks (`TrainConfig.trunk_tune_blocks`) keeps those blocks, and all that reads
their outputs, in float: the ranges of the blocks before them still hold, theirs do not
(bench/results/trunk_tune_int8.json: cosine to the float vectors). Dynamic quantization
needs no ranges, but ONNX Runtime runs its convolutions (ConvInteger) several times slower
than float.

Which int8 graph a CPU runs (`int8_kernels`): with 8-bit dot products, u8 x s8 with 8-bit
weights. x86 cores with AVX2 but without them (many AMD EPYC and older Intel servers) multiply
u8 x s8 pairs into saturating 16-bit sums, so there the weights keep 7 bits
(``reduce_range``), as ONNX Runtime advises: on this project's AVX2-only EPYC, 8-bit weights
overflowed (cosine to the float vectors, held-out clothing photos: mean 0.990, min 0.961),
7-bit ones did not (0.990 / 0.973) and ran as fast (215 vs 120 images/s float, image graph
alone, one thread); u8 x u8 weights avoid the overflow too but ran at 34. Each kind has its
own file (the digest covers it). CPUs with neither stay float.

What stays float, because quantizing it costs accuracy (measured on held-out photos:
cosine to the float vectors): the stem convolution and the first block (they see the
normalised pixels; quantized, the worst H&M photo fell to 0.82), and every MatMul (the
trained projection head and the grid-token pooling). The text and fusion graphs stay
float: they are small beside the image trunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embeddings.ml.images import ImageSource, decode_image
from embeddings.ml.packaged import TUNED_KEY

if TYPE_CHECKING:
    from embeddings.ml.loading import LoadedModel

log = logging.getLogger(__name__)

CALIBRATION_DIR = Path(__file__).resolve().parent / "int8_calibration"
CALIBRATION_FORMAT = "vitrine-int8-calibration/1"
TRUNK_PREFIX = "backbone.visual.trunk."  # a model whose weights exclude it has the package's
# How the graph is quantized; part of the int8 graph's file name, so a change re-quantizes.
QUANT_CONFIG: dict[str, Any] = {
    "format": "QDQ",  # ONNX Runtime's CPU kernels fuse QuantizeLinear/DequantizeLinear pairs
    "activations": "QUInt8",  # u8 x s8: the fast path of x86 VNNI and non-VNNI kernels alike
    "weights": "QInt8",
    "per_channel": True,  # depthwise convolutions' channels differ by orders of magnitude
    "calibration": "MinMax",
    # Node name prefixes and op types kept in float (see the module docstring).
    "float_node_prefixes": ["/conv_stem/", "/blocks.0/"],
    "float_op_types": ["MatMul"],
}
#: 7-bit weights per `int8_kernels` kind: with dot products they only cost accuracy (cosine
#: to the float vectors 0.9963 -> 0.9903 on held-out photos); without, 8 bits overflow.
REDUCE_RANGE = {"dot": False, "avx2": True}
CALIBRATION_BATCH = 16


def calibration_file(loaded: LoadedModel) -> Path | None:
    """Return the shipped activation ranges that hold for `loaded`'s image graph, or None.

    They hold when the model's image trunk is the packaged one, untouched (its weights come
    from the package, not from the model's own file), at the image size and normalisation
    the ranges were measured with.
    """
    package = loaded.config.get("image_trunk_package")
    if not package or TRUNK_PREFIX not in loaded.config.get("weights_exclude_prefixes", []):
        return None
    path = CALIBRATION_DIR / f"{package}-{loaded.preprocess.image_size}.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())["meta"]
    pre = loaded.preprocess
    if (meta["image_size"], meta["mean"], meta["std"]) != (
        pre.image_size,
        list(pre.mean),
        list(pre.std),
    ):
        return None
    return path


def int8_image_graph(loaded: LoadedModel, folder: Path, graph: str = "image.onnx") -> Path | None:
    """Return the int8 image graph in `folder` (a float export), quantizing it if needed;
    `graph`: which graph of the trunk (the image graph, or the scene graph: the same trunk
    under the same node names, so the same ranges).

    None when no shipped ranges hold for this model or they do not match the export: the
    caller then runs the float graph.
    """
    ranges = calibration_file(loaded)
    if ranges is None:
        return None
    kernels = int8_kernels()
    if kernels is None:
        log.info("int8: this CPU has neither 8-bit dot products nor AVX2: image graph in float")
        return None
    config = {**QUANT_CONFIG, "reduce_range": REDUCE_RANGE[kernels]}
    digest = hashlib.sha256(
        json.dumps(config, sort_keys=True).encode()
        + ranges.read_bytes()
        + json.dumps(sorted(loaded.config.get(TUNED_KEY, []))).encode()
    ).hexdigest()[:16]
    final = folder / f"{Path(graph).stem}.int8-{digest}.onnx"
    if final.is_file():
        return final
    with tempfile.TemporaryDirectory(prefix=".int8-", dir=folder) as tmp:
        out = Path(tmp) / final.name
        tuned = _tuned_node_prefixes(loaded.config.get(TUNED_KEY, []))
        if not _quantize(folder / graph, ranges, out, Path(tmp), kernels=kernels, tuned=tuned):
            return None
        out.replace(final)  # atomic: a concurrent loader sees no file or a whole one
    log.info("quantized the image graph to int8 (%s)", final.name)
    return final


def int8_kernels() -> str | None:
    """The int8 kernels this CPU has: "dot" (8-bit dot products: x86 VNNI/AMX, ARM dot),
    "avx2" (x86 AVX2 without them: saturating 16-bit pair sums), or None (none worth it)."""
    import platform

    if platform.system() == "Darwin":
        return "dot" if platform.machine() == "arm64" else None  # Apple silicon has the dot
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}:
        return "dot"
    return "avx2" if "avx2" in flags else None


def int8_calibrate(
    loaded: LoadedModel, photos: Sequence[ImageSource], out: Path, source: str
) -> Path:
    """Measure the activation ranges of `loaded`'s image graph on `photos`; write `out`.

    `source` says which photos they were (kept in the file). The ranges are only valid for
    models `calibration_file` would match them to: same packaged trunk, size, normalisation.
    """
    import onnxruntime
    from onnxruntime.quantization import quantize_static

    from embeddings.ml.onnx_runtime import onnx_export

    pre = loaded.preprocess
    with tempfile.TemporaryDirectory(prefix="vitrine-calibrate-") as tmp:
        work = Path(tmp)
        folder = onnx_export(loaded, work / "onnx")
        prepared = _prepared(folder / "image.onnx", work)
        cache = work / "ranges.json"
        # quantize_static calibrates, saves the ranges to `cache`, then quantizes (discarded).
        quantize_static(
            str(prepared),
            str(work / "discarded.onnx"),
            _Pixels(loaded, photos),
            calibration_cache_path=str(cache),
            **_quantize_kwargs(_float_nodes(_graph(prepared)) or [], kernels="dot"),
        )
        ranges = json.loads(cache.read_text())
    payload = {
        "meta": {
            "format": CALIBRATION_FORMAT,
            "trunk_package": loaded.config.get("image_trunk_package"),
            "image_size": pre.image_size,
            "mean": list(pre.mean),
            "std": list(pre.std),
            "photos": len(photos),
            "source": source,
            "onnxruntime": onnxruntime.__version__,
            "measured_on_spec": loaded.spec,
        },
        "ranges": ranges,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
    return out


# ---- internals -----------------------------------------------------------------------------
class _Pixels:
    """Normalised pixel batches of calibration photos (a CalibrationDataReader)."""

    def __init__(self, loaded: LoadedModel, photos: Sequence[ImageSource]) -> None:
        self._batches = self._iter(loaded, photos)

    @staticmethod
    def _iter(loaded: LoadedModel, photos: Sequence[ImageSource]) -> Iterator[dict[str, Any]]:
        pre = loaded.preprocess
        mean = np.asarray(pre.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(pre.std, dtype=np.float32).reshape(1, 3, 1, 1)
        for start in range(0, len(photos), CALIBRATION_BATCH):
            chunk = photos[start : start + CALIBRATION_BATCH]
            x = np.stack([decode_image(p, pre.image_size, pre.resize_mode) for p in chunk])
            yield {"pixels": (x.astype(np.float32) / 255.0 - mean) / std}  # (B, 3, S, S)

    def get_next(self) -> dict[str, Any] | None:
        return next(self._batches, None)


def _prepared(graph: Path, work: Path) -> Path:
    """ONNX Runtime's quantization pre-processing: batch norms folded, shapes inferred.

    Its symbolic shape inference cannot follow the grid-pooling reshape; the plain ONNX
    shape inference it falls back on is enough for the convolutions.
    """
    from onnxruntime.quantization import quant_pre_process

    out = work / "image.prepared.onnx"
    quant_pre_process(str(graph), str(out), skip_symbolic_shape=True)
    return out


def _graph(prepared: Path) -> Any:
    """The `onnx.GraphProto` of a prepared image graph (read once per quantization)."""
    import onnx

    return onnx.load(str(prepared), load_external_data=False).graph


def _float_nodes(graph: Any) -> list[str] | None:
    """Names of the nodes kept in float; None if the graph lacks the expected stem/first block."""
    names = [
        n.name
        for n in graph.node
        if n.name.startswith(tuple(QUANT_CONFIG["float_node_prefixes"]))
        or n.op_type in QUANT_CONFIG["float_op_types"]
    ]
    found = {p for p in QUANT_CONFIG["float_node_prefixes"] if any(n.startswith(p) for n in names)}
    return names if found == set(QUANT_CONFIG["float_node_prefixes"]) else None


def _unranged_nodes(graph: Any, ranged: set[str]) -> list[str]:
    """Names of the nodes an activation of which has no shipped range: they stay float.

    The shipped ranges cover the packaged trunk and the default's head; a fine-tune's own
    additions (the image embedding's grid term) have none, and quantizing a node without
    its ranges fails.
    """
    constants = {t.name for t in graph.initializer} | {
        o for n in graph.node if n.op_type == "Constant" for o in n.output
    }
    return [
        n.name
        for n in graph.node
        if n.op_type != "Constant"
        # The data in and out; other inputs (a Reshape's shape, a Gemm's weights) take none.
        and any(t and t not in constants and t not in ranged for t in (n.input[0], n.output[0]))
    ]


def _quantize_kwargs(nodes_to_exclude: list[str], *, kernels: str) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    return {
        "quant_format": QuantFormat.QDQ,
        "per_channel": QUANT_CONFIG["per_channel"],
        "reduce_range": REDUCE_RANGE[kernels],
        "activation_type": getattr(QuantType, QUANT_CONFIG["activations"]),
        "weight_type": getattr(QuantType, QUANT_CONFIG["weights"]),
        "calibrate_method": getattr(CalibrationMethod, QUANT_CONFIG["calibration"]),
        "nodes_to_exclude": nodes_to_exclude,
    }


def _tuned_node_prefixes(state_prefixes: Sequence[str]) -> list[str]:
    """The image graph's node-name prefixes of trunk modules named by state-dict prefixes:
    "backbone.visual.trunk.blocks.6.0." -> "/blocks.6/blocks.6.0/", "...conv_head." ->
    "/conv_head/" (the exporter names a node by its module path, Sequential parents first)."""
    out = []
    for prefix in state_prefixes:
        parts = prefix.removeprefix(TRUNK_PREFIX).strip(".").split(".")
        if parts[0] == "blocks":  # blocks.<stage>.<block>: one path step per Sequential
            parts = [".".join(parts[: i + 1]) for i in range(1, len(parts))]
        out.append("/" + "/".join(parts) + "/")
    return out


def _downstream_of(graph: Any, prefixes: list[str]) -> tuple[list[str], set[str]]:
    """Nodes named under `prefixes` and every node reading their outputs, however
    indirectly (the graph's nodes are in topological order), and the tensors they write."""
    tainted: set[str] = set()
    nodes = []
    for n in graph.node:
        if n.name.startswith(tuple(prefixes)) or any(t in tainted for t in n.input):
            tainted.update(n.output)
            nodes.append(n.name)
    return nodes, tainted


def _quantize(
    graph: Path,
    ranges_file: Path,
    out: Path,
    work: Path,
    *,
    kernels: str,
    tuned: Sequence[str] = (),
) -> bool:
    """Write the int8 graph of `graph` to `out` with the shipped ranges; False if they miss.

    Nodes under the `tuned` name prefixes, and all downstream of them, stay float: the
    shipped ranges were measured on the package's own weights there.
    """
    from onnxruntime.quantization import quantize_static

    prepared = _prepared(graph, work)
    proto = _graph(prepared)
    float_nodes = _float_nodes(proto)
    if float_nodes is None:
        log.warning("int8: the image graph has no stem/first block by the expected names")
        return False
    ranges = json.loads(ranges_file.read_text())["ranges"]
    convs = {t for n in proto.node if n.op_type == "Conv" for t in (n.input[0], n.output[0])}
    missing = convs - set(ranges["data"])
    if missing:
        log.warning(
            "int8: %d activation ranges missing in %s (e.g. %s): the image graph stays float",
            len(missing),
            ranges_file.name,
            sorted(missing)[0],
        )
        return False
    tuned_nodes, stale = _downstream_of(proto, list(tuned)) if tuned else ([], set())
    ranges["data"] = {k: v for k, v in ranges["data"].items() if k not in stale}
    cache = work / "ranges.json"
    cache.write_text(json.dumps(ranges))
    unranged = _unranged_nodes(proto, set(ranges["data"]))
    quantize_static(
        str(prepared),
        str(out),
        None,  # the ranges come from `cache`: no calibration photos needed here
        calibration_cache_path=str(cache),
        **_quantize_kwargs([*float_nodes, *tuned_nodes, *unranged], kernels=kernels),
    )
    return True
