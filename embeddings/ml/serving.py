"""Encoding on ONNX Runtime from an export folder alone: no torch, open_clip or transformers.

A web process answers one shopper's photo or words at a time; importing torch (and
open_clip, transformers, timm) to do it costs hundreds of MB and hundreds of thousands of
Python objects that every full garbage-collection pass then walks. Once a model's graphs
are exported (`embeddings.ml.onnx_runtime`), what the ONNX path needs beyond them is small:
how photos are preprocessed, how texts are tokenised (a Hugging Face ``tokenizer.json``,
which the `tokenizers` library reads), the ids the graphs read, the trunk's classifier.
The process that exports (it has torch) writes all of it into the export folder
(``serving.json`` + ``tokenizer.json`` + ``classes.npz``: `onnx_runtime.serving_write`),
and `serving_encoder_load` builds a `ServingEncoder` from that folder with onnxruntime,
numpy, PIL and tokenizers only.

`BatchEncoder` holds what both encoders share: decoding photos ahead on threads, the
batch loops, and the ONNX Runtime passes. `embeddings.ml.encoder.Encoder` extends it with
PyTorch (training, GPUs, models without an export); `ServingEncoder` is the ONNX part
alone, so both give the same vectors from the same graphs.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.ml.image_classes import ImageClasses
from embeddings.ml.images import ImageSource, PreprocessConfig, decode_image

#: Bumped when the graphs' inputs or outputs change (2: the image graph's pooled features;
#: 3: the scene graph): part of the export folder's name, so an older export in the same
#: folder is not read.
EXPORT_LAYOUT = 3
SERVING_FILE = "serving.json"
SERVING_FORMAT = "vitrine-serving/1"
TOKENIZER_FILE = "tokenizer.json"
CLASSES_FILE = "classes.npz"
FLOAT_GRAPH = "image.onnx"
SCENE_GRAPH = "scene.onnx"


def export_dir(onnx_dir: Path, weights_sha256: str) -> Path:
    """Return the folder that holds (or will hold) the export of these weights."""
    return Path(onnx_dir) / f"{weights_sha256}.{EXPORT_LAYOUT}"


@dataclass
class EncodeResult:
    """Vectors for the inputs that could be encoded, and why the others could not."""

    vectors: np.ndarray  # (N_ok, D) float32, L2-normalised, in input order
    indices: list[int] = field(default_factory=list)  # input index of each row of `vectors`
    failed: dict[int, str] = field(default_factory=dict)  # input index -> reason
    #: (N_ok, C) logits of the trunk's own classes, row for row with `vectors`, when asked
    #: for and the model has a classifier (`embeddings.ml.image_classes`); else None
    class_logits: np.ndarray | None = None
    #: (N_ok, F) the trunk's pooled features those logits are read from, with
    #: `class_logits` (what `bench/relevance_floor.py` measures feature distances on)
    pooled: np.ndarray | None = None


# ---- settings shared by both encoders ----------------------------------------------------
def threads_configured() -> int:
    """`VITRINE_TORCH_THREADS` (0 when unset): the CPU threads a process's encoder may use."""
    return int(os.environ.get("VITRINE_TORCH_THREADS", "0") or 0)


def cpus_usable() -> int:
    """The CPUs this process may run on (containers often see every host core)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return usable or 1


def decode_workers_default() -> int:
    """Threads that decode photos ahead of the graphs: one per CPU, at most 8."""
    return min(8, os.cpu_count() or 1)


def int8_wanted() -> bool:
    """Whether ONNX Runtime runs the int8 image graph where one can be made (the default).

    `VITRINE_ENCODER_INT8=0` goes back to the float graph (GPUs always run float PyTorch).
    """
    value = os.environ.get("VITRINE_ENCODER_INT8", "1").strip().lower()
    if value not in _FLAGS:
        raise ValueError(f"VITRINE_ENCODER_INT8={value!r}: use 1 or 0")
    return _FLAGS[value]


_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False}
_FLAGS |= {"no": False, "off": False, "": True}


def onnx_backend_off() -> bool:
    """Whether `VITRINE_ENCODER_BACKEND=torch` keeps every encoder on PyTorch."""
    return os.environ.get("VITRINE_ENCODER_BACKEND", "").strip().lower() == "torch"


def image_graph_key(int8: bool) -> str:
    """Which image graph an encoder asking for `int8` runs on this CPU, as `serving.json`
    names it: "float", or "int8-<kernels>" (`onnx_int8.int8_kernels`)."""
    from embeddings.ml import onnx_int8

    kernels = onnx_int8.int8_kernels() if int8 else None
    return f"int8-{kernels}" if kernels else "float"


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit length (as torch's F.normalize, eps 1e-12)."""
    v = vectors.astype(np.float32, copy=False)
    norms = np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return (v / norms).astype(np.float32, copy=False)


# ---- ONNX Runtime sessions ---------------------------------------------------------------
@dataclass
class OrtModel:
    """The ONNX Runtime sessions of one model's export."""

    image_session: Any
    text_session: Any
    fusion_session: Any
    pad_id: int
    max_text_tokens: int
    image_int8: bool = False  # the image graph is the quantized one (`onnx_int8`)
    #: The scene graph (`scene_cells`), None when the model has none: its image embedding
    #: is not an average of per-cell vectors (a grid term, a non-linear head)
    scene_session: Any = None

    def scene_cells(self, pixels: np.ndarray) -> np.ndarray:
        """Return the image embedding of each feature-map cell (B, h, w, D), unnormalised,
        of normalised pixels (B, 3, H, W) of any size: the image embedding of a photo is
        the average of its cells' (`regions.cells_pool`)."""
        (cells,) = self.scene_session.run(None, {"pixels": pixels})
        return cells

    def image(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (embeddings (B, D), grid tokens (B, N, C), the trunk's pooled features
        (B, F)) of normalised pixels."""
        emb, tokens, pooled = self.image_session.run(None, {"pixels": pixels})
        return emb, tokens, pooled

    def text(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (embeddings (B, D), states (B, T, H), mask (B, T)) of token ids (B, T)."""
        mask = tokens != self.pad_id
        longest = max(1, int(mask.sum(1).max())) if tokens.size else 1
        tokens, mask = tokens[:, :longest], mask[:, :longest]  # trailing padding carries nothing
        emb, states = self.text_session.run(
            None, {"tokens": tokens.astype(np.int64), "mask": mask.astype(np.int64)}
        )
        return emb, states, mask

    def fuse(
        self,
        img_emb: np.ndarray,
        img_tokens: np.ndarray,
        txt_emb: np.ndarray,
        states: np.ndarray,
        mask: np.ndarray,
    ) -> np.ndarray:
        """Return fused embeddings (B, D) (unnormalised), as `HybridFusion.forward`.

        The graph reads exactly `max_text_tokens` text tokens (the traced attention has a
        fixed sequence length): shorter texts are padded and masked, which leaves the
        result unchanged, since padded keys get no attention.
        """
        t = self.max_text_tokens
        b, n, h = states.shape
        padded = np.zeros((b, t, h), dtype=np.float32)
        padded_mask = np.zeros((b, t), dtype=bool)
        keep = min(n, t)
        padded[:, :keep] = states[:, :keep]
        padded_mask[:, :keep] = mask[:, :keep]
        (fused,) = self.fusion_session.run(
            None,
            {
                "img_emb": img_emb,
                "img_tokens": img_tokens,
                "txt_emb": txt_emb,
                "txt_states": padded,
                "txt_mask": padded_mask,
            },
        )
        return fused


def ort_model_open(
    folder: Path,
    image_graph: str,
    *,
    threads: int,
    pad_id: int,
    max_text_tokens: int,
    scene_graph: str | None = None,
) -> OrtModel:
    """Return CPU sessions of an export's graphs on `threads` threads (`image_graph`,
    `scene_graph`: the file names of the image and scene graphs to run, float or int8;
    no scene session without `scene_graph`)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]

    def session(path: Path) -> Any:
        return ort.InferenceSession(str(path), options, providers=providers)

    return OrtModel(
        session(folder / image_graph),
        session(folder / "text.onnx"),
        session(folder / "fusion.onnx"),
        pad_id=pad_id,
        max_text_tokens=max_text_tokens,
        image_int8=image_graph != FLOAT_GRAPH,
        scene_session=session(folder / scene_graph) if scene_graph else None,
    )


# ---- what both encoders share ------------------------------------------------------------
class BatchEncoder:
    """Photos decoded ahead on threads, batch loops, and the ONNX Runtime passes.

    Subclasses set the attributes below. The per-batch passes (`_image_vectors`,
    `_item_vectors`, `_image_pooled`, `_text_vectors`) run the ONNX graphs here;
    `embeddings.ml.encoder.Encoder` runs PyTorch in them when it has no `ort`.
    """

    spec: str
    weights_sha256: str
    dim: int
    preprocess: PreprocessConfig
    image_classes: ImageClasses | None
    ort: OrtModel | None
    batch_size: int
    workers: int
    _pool: ThreadPoolExecutor | None

    @property
    def backend(self) -> str:
        """What runs the model: "torch", "onnxruntime", or "onnxruntime-int8" (int8 image
        graph; text and fusion in float)."""
        if self.ort is None:
            return "torch"
        return "onnxruntime-int8" if self.ort.image_int8 else "onnxruntime"

    # ---- public API -----------------------------------------------------------------
    def encode_images(
        self, images: Sequence[ImageSource], batch_size: int | None = None, classes: bool = False
    ) -> EncodeResult:
        """Return image vectors (N_ok, D) and the failures among `images` (paths or bytes).

        With `classes`, also each photo's class logits by the trunk's own classifier
        (`EncodeResult.class_logits`; None when the model has none), from the same pass.
        """
        return self._encode(images, None, batch_size, self.image_classes if classes else None)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Return image vectors (B, D) of photos already decoded to the model's input:
        uint8 (B, 3, S, S) at `preprocess.image_size`, as `decode_image` gives them.

        For callers that cut many inputs out of one photo (a scene's windows,
        `embeddings.ml.regions`): they decode it once and hand every crop over in one call,
        instead of encoding each crop to bytes that the decode threads read back.
        """
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._image_vectors(pixels)

    @property
    def has_scene_cells(self) -> bool:
        """Whether `scene_cells` can run (an ONNX export with a scene graph)."""
        return self.ort is not None and self.ort.scene_session is not None

    def scene_cells(self, pixels: np.ndarray) -> np.ndarray:
        """Return the image embedding of each feature-map cell (h, w, D), unnormalised, of
        one photo decoded to uint8 (3, H, W) at any size (`has_scene_cells` must hold).

        One pass of the image trunk over a whole scene: any region's vector is then the
        average of the cells under it (`embeddings.ml.regions.cells_pool`).
        """
        assert self.ort is not None and self.ort.scene_session is not None
        return self.ort.scene_cells(self._ort_pixels(pixels[None]))[0]

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Return text vectors (N, D) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = [
            self._text_vectors(list(texts[start : start + batch_size]))
            for start in range(0, len(texts), batch_size)
        ]
        return np.concatenate(out)

    def encode_items(
        self,
        images: Sequence[ImageSource],
        texts: Sequence[str],
        batch_size: int | None = None,
    ) -> EncodeResult:
        """Return fused item vectors (N_ok, D) for image+text pairs, and image failures."""
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        return self._encode(images, texts, batch_size)

    def ort_all(
        self, pixels: np.ndarray, texts: list[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return normalised (image, text, fused) vectors (B, D) of uint8 pixels + texts.

        One run of each graph for all three kinds (catalog items need all three).
        """
        assert self.ort is not None
        img_emb, img_tokens, _ = self.ort.image(self._ort_pixels(pixels))
        txt_emb, states, mask = self.ort.text(self._token_ids(texts))
        fused = self.ort.fuse(img_emb, img_tokens, txt_emb, states, mask)
        return normalized(img_emb), normalized(txt_emb), normalized(fused)

    def close(self) -> None:
        """Stop the decode threads (they also stop when the process exits)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ---- per-batch passes (ONNX Runtime) ----------------------------------------------
    def _token_ids(self, texts: list[str]) -> np.ndarray:
        """Token ids (B, T) int64 of texts, padded to the model's context length."""
        raise NotImplementedError

    def _image_vectors(self, pixels: np.ndarray) -> np.ndarray:
        """Normalised image vectors (B, D) of uint8 pixels (B, 3, S, S)."""
        assert self.ort is not None
        return normalized(self.ort.image(self._ort_pixels(pixels))[0])

    def _item_vectors(self, pixels: np.ndarray, texts: list[str]) -> np.ndarray:
        """Normalised fused item vectors (B, D) of uint8 pixels and their texts."""
        return self.ort_all(pixels, texts)[2]

    def _image_pooled(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Unnormalised image embeddings (B, D), the trunk's pooled features (B, F))."""
        assert self.ort is not None
        emb, _, pooled = self.ort.image(self._ort_pixels(pixels))
        return emb, pooled

    def _text_vectors(self, texts: list[str]) -> np.ndarray:
        """Normalised text vectors (B, D)."""
        assert self.ort is not None
        return normalized(self.ort.text(self._token_ids(texts))[0])

    def _ort_pixels(self, pixels: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.preprocess.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.preprocess.std, dtype=np.float32).reshape(1, 3, 1, 1)
        return (pixels.astype(np.float32) / 255.0 - mean) / std  # (B, 3, H, W)

    # ---- the batch loops ----------------------------------------------------------------
    def _decode(self, source: ImageSource) -> np.ndarray:
        return decode_image(source, self.preprocess.image_size, self.preprocess.resize_mode)

    def _decoded_batches(
        self, images: Sequence[ImageSource], batch_size: int
    ) -> Iterator[tuple[list[int], list[np.ndarray], dict[int, str]]]:
        """Yield (input indices, decoded arrays, failures) per batch, decoding ahead."""

        def decode_safe(i: int) -> np.ndarray | str:
            try:
                return self._decode(images[i])
            except Exception as exc:  # any decoder error is a per-image failure
                return f"{type(exc).__name__}: {exc}"

        chunks = [
            range(s, min(s + batch_size, len(images))) for s in range(0, len(images), batch_size)
        ]
        if len(images) == 1:  # the query path: no thread hop for a single photo
            submit: Callable[[int], Future[np.ndarray | str]] = _done_future(decode_safe)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vitrine-decode")
            pool = self._pool
            submit = lambda i: pool.submit(decode_safe, i)  # noqa: E731
        queue: deque[list[tuple[int, Future[np.ndarray | str]]]] = deque()
        ahead = 2  # batches decoded ahead of the model: enough to hide decode latency
        for chunk in chunks[:ahead]:
            queue.append([(i, submit(i)) for i in chunk])
        next_chunk = ahead
        while queue:
            pending = queue.popleft()
            if next_chunk < len(chunks):
                queue.append([(i, submit(i)) for i in chunks[next_chunk]])
                next_chunk += 1
            ok, arrays, failed = [], [], {}
            for i, fut in pending:
                res = fut.result()
                if isinstance(res, str):
                    failed[i] = res
                else:
                    ok.append(i)
                    arrays.append(res)
            yield ok, arrays, failed

    def _encode(
        self,
        images: Sequence[ImageSource],
        texts: Sequence[str] | None,
        batch_size: int | None,
        classes: ImageClasses | None = None,
    ) -> EncodeResult:
        """Image vectors (`texts` None) or fused item vectors of `images`, batch by batch as
        the decode threads deliver them; with `classes` (image vectors only), also each
        photo's class logits and the trunk's pooled features they are read from, from the
        same pass."""
        vectors: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        features: list[np.ndarray] = []
        indices: list[int] = []
        failed: dict[int, str] = {}
        for ok, arrays, bad in self._decoded_batches(images, batch_size or self.batch_size):
            failed.update(bad)
            if not ok:
                continue
            pixels = np.stack(arrays)
            if classes is not None:
                emb, pooled = self._image_pooled(pixels)
                vectors.append(normalized(emb))
                logits.append(classes.logits(pooled))
                features.append(np.asarray(pooled, dtype=np.float32))
            elif texts is None:
                vectors.append(self._image_vectors(pixels))
            else:
                vectors.append(self._item_vectors(pixels, [texts[i] for i in ok]))
            indices.extend(ok)

        def rows(parts: list[np.ndarray], width: int) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)

        result = EncodeResult(rows(vectors, self.dim), indices, dict(sorted(failed.items())))
        if classes is not None:
            result.class_logits = rows(logits, classes.count)
            result.pooled = rows(features, classes.weight.shape[1])
        return result


def _done_future(
    fn: Callable[[int], np.ndarray | str],
) -> Callable[[int], Future[np.ndarray | str]]:
    def submit(i: int) -> Future[np.ndarray | str]:
        fut: Future[np.ndarray | str] = Future()
        fut.set_result(fn(i))
        return fut

    return submit


# ---- texts without transformers ----------------------------------------------------------
class TextTokenizer:
    """open_clip's `HFTokenizer` (``clean="whitespace"``) on the `tokenizers` library: the
    same cleaning, the same fast tokenizer file, truncated and padded to the same length."""

    def __init__(self, folder: Path, cfg: dict[str, Any]) -> None:
        from tokenizers import Tokenizer

        self.context_length = int(cfg["context_length"])
        self.sep_id: int | None = cfg["sep_id"] if cfg.get("strip_sep_token") else None
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        # What transformers' fast tokenizer sets before `tokenizer(texts, padding=
        # "max_length", truncation=True, max_length=n)` encodes a batch.
        self.tokenizer.enable_truncation(
            max_length=self.context_length,
            stride=0,
            strategy="longest_first",
            direction=cfg["truncation_side"],
        )
        self.tokenizer.enable_padding(
            direction=cfg["padding_side"],
            pad_id=int(cfg["pad_id"]),
            pad_type_id=int(cfg["pad_type_id"]),
            pad_token=cfg["pad_token"],
            length=self.context_length,
        )

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Token ids (B, context_length) int64."""
        encodings = self.tokenizer.encode_batch([text_clean(t) for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), -1)
        if self.sep_id is not None:
            ids[ids == self.sep_id] = 0  # as HFTokenizer's strip_sep_token
        return ids


def text_clean(text: str) -> str:
    """open_clip's "whitespace" cleaning of a text before tokenising: `ftfy` repairs,
    HTML entities unescaped twice, runs of whitespace collapsed."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split())


# ---- the serving encoder -----------------------------------------------------------------
class ServingEncoder(BatchEncoder):
    """A model's ONNX export run with onnxruntime, numpy, PIL and tokenizers only: the
    encoder of a process that only answers queries (`serving_encoder_load`)."""

    def __init__(
        self,
        folder: Path,
        manifest: dict[str, Any],
        image_graph: str,
        *,
        threads: int,
        batch_size: int = 32,
        scene_graph: str | None = None,
    ) -> None:
        self.folder = folder
        self.spec = manifest["spec"]
        self.weights_sha256 = manifest["weights_sha256"]
        self.dim = int(manifest["dim"])
        self.preprocess = PreprocessConfig(**manifest["preprocess"])
        self.tokenizer = TextTokenizer(folder, manifest["tokenizer"])
        self.image_classes = None
        if manifest.get("image_classes"):
            with np.load(folder / CLASSES_FILE) as arrays:
                self.image_classes = ImageClasses(
                    weight=arrays["weight"], bias=arrays["bias"],
                    source=manifest["image_classes"],
                )  # fmt: skip
        self.ort = ort_model_open(
            folder,
            image_graph,
            threads=threads,
            pad_id=int(manifest["pad_id"]),
            max_text_tokens=int(manifest["max_text_tokens"]),
            scene_graph=scene_graph,
        )
        self.batch_size = batch_size
        self.workers = decode_workers_default()
        self._pool = None

    def _token_ids(self, texts: list[str]) -> np.ndarray:
        return self.tokenizer(texts)


def serving_manifest(folder: Path) -> dict[str, Any] | None:
    """The export's `serving.json`, or None when it has none (or one of another format)."""
    try:
        manifest: dict[str, Any] = json.loads((folder / SERVING_FILE).read_text())
    except (OSError, ValueError):
        return None
    return manifest if manifest.get("format") == SERVING_FORMAT else None


def serving_encoder_load(
    folder: Path, *, int8: bool | None = None, threads: int | None = None
) -> ServingEncoder | None:
    """Return a `ServingEncoder` of the export in `folder`, or None when it cannot serve:
    no `serving.json`, or no image graph yet for what this process asks (`int8`, None:
    `int8_wanted`) on this CPU (the process that exports makes it: `onnx_runtime`)."""
    if onnx_backend_off():
        return None
    manifest = serving_manifest(folder)
    if manifest is None:
        return None
    key = image_graph_key(int8_wanted() if int8 is None else int8)
    graph = manifest["image_graphs"].get(key)
    if graph is None or not (folder / graph).is_file():
        return None
    scene = manifest.get("scene_graphs", {}).get(key)
    return ServingEncoder(
        folder,
        manifest,
        graph,
        threads=threads or threads_configured() or cpus_usable(),
        scene_graph=scene if scene and (folder / scene).is_file() else None,
    )


def serving_manifest_write(folder: Path, manifest: dict[str, Any]) -> None:
    """Write `serving.json` atomically, keeping the image graphs other writers recorded
    (another kind of CPU sharing the folder). Two writers at the same moment may each drop
    the other's new entry: the next process that misses its graph loads the full encoder,
    which records it again."""
    old = serving_manifest(folder)
    if old is not None and old.get("weights_sha256") == manifest["weights_sha256"]:
        for key in ("image_graphs", "scene_graphs"):
            manifest = {**manifest, key: old.get(key, {}) | manifest.get(key, {})}
    fd, tmp = tempfile.mkstemp(prefix=".serving-", suffix=".json", dir=folder)
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    Path(tmp).replace(folder / SERVING_FILE)  # a reader sees the old file or the whole new one
