"""How close the int8 image graph of a model whose trunk's last blocks were tuned stays to its
float graph, beside the same figure for the default (untuned trunk), same photos, same CPU.

The tuned blocks and all after them stay float (`embeddings.ml.onnx_int8`: their shipped
ranges were measured on the package's weights); the blocks before them run in int8 with the
shipped ranges. The quantization is forced here whatever the CPU, as that CPU would run it
(`int8_kernels` is recorded: 7-bit weights without 8-bit dot products, 8-bit with them).

    nice -n 10 .venv/bin/python bench/trunk_tune_int8.py --spec checkpoint:<dir> --n 400
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def cosines(spec: str, photos: list[Path], work: Path) -> dict[str, object]:
    import onnxruntime as ort

    from embeddings.ml.loading import load_model
    from embeddings.ml.onnx_int8 import (
        _Pixels,
        _quantize,
        _tuned_node_prefixes,
        calibration_file,
        int8_kernels,
    )
    from embeddings.ml.onnx_runtime import onnx_export
    from embeddings.ml.packaged import TUNED_KEY

    loaded = load_model(spec)
    ranges = calibration_file(loaded)
    if ranges is None:
        raise SystemExit(f"{spec}: no shipped int8 ranges hold for this model")
    folder = onnx_export(loaded, work / "onnx")
    tuned = _tuned_node_prefixes(loaded.config.get(TUNED_KEY, []))
    int8 = work / f"{loaded.weights_sha256[:16]}.int8.onnx"
    if not _quantize(
        folder / "image.onnx", ranges, int8, work, kernels=int8_kernels() or "dot", tuned=tuned
    ):
        raise SystemExit(f"{spec}: the quantization refused the graph")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sessions = [
        ort.InferenceSession(str(g), options, providers=["CPUExecutionProvider"])
        for g in (folder / "image.onnx", int8)
    ]
    reader = _Pixels(loaded, photos)
    cos: list[np.ndarray] = []
    while (batch := reader.get_next()) is not None:
        a, b = (s.run(None, batch)[0] for s in sessions)
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        cos.append((a * b).sum(1))
    c = np.concatenate(cos)
    return {
        "tuned_prefixes": loaded.config.get(TUNED_KEY, []),
        "n": len(c),
        "mean": round(float(c.mean()), 4),
        "p01": round(float(np.quantile(c, 0.01)), 4),
        "min": round(float(c.min()), 4),
    }


def main() -> int:
    from embeddings.ml.onnx_int8 import int8_kernels

    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True, help="the tuned checkpoint")
    parser.add_argument("--baseline", default="default")
    parser.add_argument("--datasets", type=Path, default=BASE_DIR.parent / "shared/datasets")
    parser.add_argument("--n", type=int, default=400, help="H&M photos (every k-th)")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "bench/results/trunk_tune_int8.json")
    args = parser.parse_args()
    hm = sorted((args.datasets / "hm" / "images").glob("*.jpg"))
    photos = hm[:: max(1, len(hm) // args.n)][: args.n]
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="vitrine-int8-") as tmp:
        for spec in (args.baseline, args.spec):
            results[spec] = cosines(spec, photos, Path(tmp))
            print(json.dumps({spec: results[spec]}), flush=True)
    args.out.write_text(
        json.dumps(
            {
                "what": "image vectors' cosine, int8 graph -> float graph, H&M photos",
                "cpu_int8_kernels": int8_kernels(),
                "results": results,
                "load_average_at_end": os.getloadavg(),
                "command": "nice -n 10 .venv/bin/python bench/trunk_tune_int8.py "
                + " ".join(sys.argv[1:]),
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
