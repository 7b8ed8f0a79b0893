"""Batch encoders: images, texts and fused items to L2-normalised float32 vectors.

The model must never wait on JPEG decoding: images are decoded and resized by a thread
pool (PIL releases the GIL while decoding and resizing) a few batches ahead of the model.
Broken images never kill a batch; they come back in `EncodeResult.failed` with a reason.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from embeddings.ml.images import ImageSource, decode_image, normalize_batch
from embeddings.ml.model import TextTrunkOut

if TYPE_CHECKING:
    from embeddings.ml.loading import LoadedModel
    from embeddings.ml.onnx_runtime import OrtModel


@dataclass
class EncodeResult:
    """Vectors for the inputs that could be encoded, and why the others could not."""

    vectors: np.ndarray  # (N_ok, D) float32, L2-normalised, in input order
    indices: list[int] = field(default_factory=list)  # input index of each row of `vectors`
    failed: dict[int, str] = field(default_factory=dict)  # input index -> reason
    #: (N_ok, C) logits of the trunk's own classes, row for row with `vectors`, when asked
    #: for and the model has a classifier (`embeddings.ml.image_classes`); else None
    class_logits: np.ndarray | None = None
    #: (N_ok, F) the trunk's pooled features those logits are read from (what a catalog's
    #: feature distance reads, `embeddings.ml.image_domain`), with `class_logits`
    pooled: np.ndarray | None = None


def pick_device(device: str | None = None) -> torch.device:
    """Return `device`, or CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def cpu_threads() -> int:
    """Return the torch thread count for CPU inference.

    `VITRINE_TORCH_THREADS` if set (a web worker answering one query at a time does best
    with 1-2), else torch's default capped at the CPUs this process may actually use
    (containers often see every host core but may run on few).
    """
    configured = int(os.environ.get("VITRINE_TORCH_THREADS", "0") or 0)
    if configured > 0:
        return configured
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(torch.get_num_threads(), usable or 1))


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


@dataclass
class ItemVectors:
    """Image, text and fused vectors of image+text items from one pass (`encode_all`).

    Row i of `image` and `fused` is item `indices[i]`; `text` has a row for every item.
    """

    indices: list[int]  # items whose image decoded (image and fused rows are for these)
    image: np.ndarray  # (N_ok, D)
    fused: np.ndarray  # (N_ok, D)
    text: np.ndarray  # (N, D): every item has a text vector, even when its image failed
    failed: dict[int, str]  # item index -> why its image could not be encoded


class Encoder:
    """Encode images, texts and items with one loaded model.

    Example::

        encoder = Encoder(load_model("default"))
        result = encoder.encode_images([b"...jpeg bytes...", "photo.jpg"])
        result.vectors  # (2, encoder.dim) unless one failed: see result.failed
    """

    def __init__(
        self,
        loaded: LoadedModel,
        device: str | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        onnx_dir: Path | None = None,
        int8: bool | None = None,
    ) -> None:
        self.loaded = loaded
        self.device = pick_device(device)
        self.spec = loaded.spec
        self.weights_sha256 = loaded.weights_sha256
        self.dim = loaded.dim
        self.preprocess = loaded.preprocess
        self.tokenizer = loaded.tokenizer
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        self.model = loaded.model.to(self.device).eval()
        if self.device.type == "cpu":
            # NHWC is what oneDNN convolutions prefer; about 1.2-1.5x faster for CNN towers.
            self.model.backbone.visual.to(memory_format=torch.channels_last)
        # bf16 on GPU: twice the matmul throughput; vectors are cast back to float32.
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        self.batch_size = batch_size or (256 if self.device.type == "cuda" else 32)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self._pool: ThreadPoolExecutor | None = None
        self.ort: OrtModel | None = None
        if onnx_dir is not None and self.device.type == "cpu" and _onnx_wanted(loaded):
            from embeddings.ml.onnx_runtime import ort_model_load

            self.ort = ort_model_load(
                loaded,
                Path(onnx_dir),
                threads=cpu_threads(),
                int8=int8_wanted() if int8 is None else int8,
            )

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
        if classes and self.loaded.image_classes is not None:
            return self._encode_with_classes(images, batch_size)
        return self._encode(images, None, batch_size)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Return image vectors (B, D) of photos already decoded to the model's input:
        uint8 (B, 3, S, S) at `preprocess.image_size`, as `decode_image` gives them.

        For callers that cut many inputs out of one photo (a scene's windows,
        `embeddings.ml.regions`): they decode it once and hand every crop over in one call,
        instead of encoding each crop to bytes that the decode threads read back.
        """
        if len(pixels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.ort is not None:
            return self._ort_encode(pixels, None)
        return self._forward(self._image_fn, torch.from_numpy(pixels).to(self.device))

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Return text vectors (N, D) float32, L2-normalised."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size]))
            if self.ort is not None:
                out.append(_normalized(self.ort.text(tokens.numpy())[0]))
                continue
            out.append(self._forward(self.model.encode_text, tokens.to(self.device)))
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

    def encode_all(
        self,
        images: Sequence[ImageSource],
        texts: Sequence[str],
        *,
        text_trunk: Callable[[list[str]], TextTrunkOut] | None = None,
        batch_size: int | None = None,
    ) -> ItemVectors:
        """Image, text and fused vectors of image+text items, each photo decoded once.

        One pass per batch: the model's `forward_all` (or the three ONNX graphs) yields all
        three vectors from one image-tower and one text-tower run, about half the work of
        `encode_images` + `encode_texts` + `encode_items`. `text_trunk` (optional) gives the
        frozen text trunk's outputs (`TextTrunkOut`) for a batch's texts instead of
        tokenising them, so a caller may cache them (the evaluation does); it runs on
        PyTorch. Items whose photo fails still get a text vector.
        """
        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts")
        image_rows: list[np.ndarray] = []
        fused_rows: list[np.ndarray] = []
        indices: list[int] = []
        text = np.zeros((len(texts), self.dim), dtype=np.float32)
        failed: dict[int, str] = {}
        for ok, arrays, bad in self._decoded_batches(images, batch_size or self.batch_size):
            failed.update(bad)
            if not ok:
                continue
            batch_texts = [texts[i] for i in ok]
            if self.ort is not None and text_trunk is None:
                img, txt, fused = self.ort_all(np.stack(arrays), batch_texts)
            else:
                pixels = torch.from_numpy(np.stack(arrays)).to(self.device)
                x = normalize_batch(pixels, self.preprocess)  # (B, 3, S, S) float
                if self.device.type == "cpu":
                    x = x.contiguous(memory_format=torch.channels_last)  # as _image_fn does
                text_in: torch.Tensor | TextTrunkOut
                if text_trunk is None:
                    text_in = self.tokenizer(batch_texts).to(self.device)  # (B, T)
                else:
                    text_in = TextTrunkOut(*(t.to(self.device) for t in text_trunk(batch_texts)))
                with torch.inference_mode(), self._autocast():
                    out = self.model.forward_all(x, text_in)  # each (B, D), normalised
                img, txt, fused = (out[k].float().cpu().numpy() for k in ("image", "text", "fused"))
            image_rows.append(img)
            fused_rows.append(fused)
            text[ok] = txt
            indices.extend(ok)
        if failed:  # their images failed, their texts did not
            lost = sorted(failed)
            text[lost] = self.encode_texts([texts[i] for i in lost])
        empty = np.zeros((0, self.dim), dtype=np.float32)
        return ItemVectors(
            indices=indices,
            image=np.concatenate(image_rows) if image_rows else empty,
            fused=np.concatenate(fused_rows) if fused_rows else empty,
            text=text,
            failed=dict(sorted(failed.items())),
        )

    def close(self) -> None:
        """Stop the decode threads (they also stop when the process exits)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    # ---- internals --------------------------------------------------------------------
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
    ) -> EncodeResult:
        bs = batch_size or self.batch_size
        vectors: list[np.ndarray] = []
        indices: list[int] = []
        failed: dict[int, str] = {}
        for ok, arrays, bad in self._decoded_batches(images, bs):
            failed.update(bad)
            if not ok:
                continue
            if self.ort is not None:
                batch_texts = None if texts is None else [texts[i] for i in ok]
                vectors.append(self._ort_encode(np.stack(arrays), batch_texts))
                indices.extend(ok)
                continue
            pixels = torch.from_numpy(np.stack(arrays)).to(self.device, non_blocking=True)
            if texts is None:
                vectors.append(self._forward(self._image_fn, pixels))
            else:
                tokens = self.tokenizer([texts[i] for i in ok]).to(self.device)
                vectors.append(self._forward(self._item_fn, pixels, tokens))
            indices.extend(ok)
        out = np.concatenate(vectors) if vectors else np.zeros((0, self.dim), np.float32)
        return EncodeResult(out, indices, dict(sorted(failed.items())))

    def _encode_with_classes(
        self, images: Sequence[ImageSource], batch_size: int | None
    ) -> EncodeResult:
        """`_encode` of photos, with their class logits from the trunk's pooled features."""
        head = self.loaded.image_classes
        assert head is not None
        vectors: list[np.ndarray] = []
        logits: list[np.ndarray] = []
        features: list[np.ndarray] = []
        indices: list[int] = []
        failed: dict[int, str] = {}
        for ok, arrays, bad in self._decoded_batches(images, batch_size or self.batch_size):
            failed.update(bad)
            if not ok:
                continue
            if self.ort is not None:
                emb, _, pooled = self.ort.image(self._ort_pixels(np.stack(arrays)))
            else:
                x = normalize_batch(
                    torch.from_numpy(np.stack(arrays)).to(self.device), self.preprocess
                )
                with torch.inference_mode(), self._autocast():
                    trunk_pooled, tokens = self.model.image_trunk_features(x)
                    emb_t = self.model.image_features_from_trunk(trunk_pooled, tokens)
                emb, pooled = (t.float().cpu().numpy() for t in (emb_t, trunk_pooled))
            vectors.append(_normalized(emb))
            logits.append(head.logits(pooled))
            features.append(np.asarray(pooled, dtype=np.float32))
            indices.extend(ok)
        empty = np.zeros((0, self.dim), np.float32)
        no_features = np.zeros((0, head.weight.shape[1]), np.float32)
        return EncodeResult(
            np.concatenate(vectors) if vectors else empty,
            indices,
            dict(sorted(failed.items())),
            np.concatenate(logits) if logits else np.zeros((0, head.count), np.float32),
            np.concatenate(features) if features else no_features,
        )

    def _ort_encode(self, pixels: np.ndarray, texts: list[str] | None) -> np.ndarray:
        """Image (or fused item, with `texts`) vectors of uint8 pixels (B, 3, S, S) on ORT."""
        if texts is None:
            assert self.ort is not None
            return _normalized(self.ort.image(self._ort_pixels(pixels))[0])
        return self.ort_all(pixels, texts)[2]

    def ort_all(
        self, pixels: np.ndarray, texts: list[str]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return normalised (image, text, fused) vectors (B, D) of uint8 pixels + texts.

        One run of each graph for all three kinds (catalog items need all three).
        """
        assert self.ort is not None
        img_emb, img_tokens, _ = self.ort.image(self._ort_pixels(pixels))
        txt_emb, states, mask = self.ort.text(self.tokenizer(texts).numpy())
        fused = self.ort.fuse(img_emb, img_tokens, txt_emb, states, mask)
        return _normalized(img_emb), _normalized(txt_emb), _normalized(fused)

    def _ort_pixels(self, pixels: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.preprocess.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.preprocess.std, dtype=np.float32).reshape(1, 3, 1, 1)
        return (pixels.astype(np.float32) / 255.0 - mean) / std  # (B, 3, S, S)

    def _image_fn(self, pixels: torch.Tensor) -> torch.Tensor:
        x = normalize_batch(pixels, self.preprocess)  # (B, 3, S, S) float
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model.encode_image(x)  # (B, D)

    def _item_fn(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = normalize_batch(pixels, self.preprocess)  # (B, 3, S, S) float
        return self.model.encode_item(x, tokens)  # (B, D)

    def _forward(self, fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> np.ndarray:
        """Run `fn` over `tensors` in chunks, halving the chunk on out-of-memory."""
        n = tensors[0].shape[0]
        start, outs = 0, []
        while start < n:
            bs = min(self.batch_size, n - start)
            try:
                with torch.inference_mode(), self._autocast():
                    out = fn(*(t[start : start + bs] for t in tensors))
                out = torch.nn.functional.normalize(out.float(), dim=-1)
                outs.append(out.cpu().numpy().astype(np.float32, copy=False))
                start += bs
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_oom(exc) or bs == 1:
                    raise
                self.batch_size = max(1, bs // 2)  # remembered for later calls too
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        return np.concatenate(outs)

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def _onnx_wanted(loaded: LoadedModel) -> bool:
    """ONNX Runtime unless VITRINE_ENCODER_BACKEND=torch, for models that can be exported."""
    if os.environ.get("VITRINE_ENCODER_BACKEND", "").strip().lower() == "torch":
        return False
    from embeddings.ml.onnx_runtime import supports_onnx

    return supports_onnx(loaded)


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


def _normalized(vectors: np.ndarray) -> np.ndarray:
    """Return float32 rows scaled to unit length (as torch's F.normalize, eps 1e-12)."""
    v = vectors.astype(np.float32, copy=False)
    norms = np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return (v / norms).astype(np.float32, copy=False)


def _done_future(
    fn: Callable[[int], np.ndarray | str],
) -> Callable[[int], Future[np.ndarray | str]]:
    def submit(i: int) -> Future[np.ndarray | str]:
        fut: Future[np.ndarray | str] = Future()
        fut.set_result(fn(i))
        return fut

    return submit
