"""Batch encoders: images, texts and fused items to L2-normalised float32 vectors.

The model must never wait on JPEG decoding: images are decoded and resized by a thread
pool (PIL releases the GIL while decoding and resizing) a few batches ahead of the model.
Broken images never kill a batch; they come back in `EncodeResult.failed` with a reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from embeddings.ml.images import ImageSource, normalize_batch
from embeddings.ml.model import TextTrunkOut
from embeddings.ml.serving import (
    BatchEncoder,
    EncodeResult,
    cpus_usable,
    decode_workers_default,
    int8_wanted,
    onnx_backend_off,
    threads_configured,
)

if TYPE_CHECKING:
    from embeddings.ml.loading import LoadedModel

__all__ = ["EncodeResult", "Encoder", "ItemVectors", "cpu_threads", "int8_wanted", "pick_device"]


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
    configured = threads_configured()
    if configured > 0:
        return configured
    return max(1, min(torch.get_num_threads(), cpus_usable()))


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


class Encoder(BatchEncoder):
    """Encode images, texts and items with one loaded model (`BatchEncoder`: the loops and
    the ONNX Runtime passes; here, PyTorch where it has no export).

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
        self.image_classes = loaded.image_classes
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
        self.workers = workers or decode_workers_default()
        self._pool = None
        self.ort = None
        if onnx_dir is not None and self.device.type == "cpu" and _onnx_wanted(loaded):
            from embeddings.ml.onnx_runtime import ort_model_load

            self.ort = ort_model_load(
                loaded,
                Path(onnx_dir),
                threads=cpu_threads(),
                int8=int8_wanted() if int8 is None else int8,
            )

    # ---- public API beyond `BatchEncoder`'s -------------------------------------------
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

    # ---- per-batch passes: PyTorch unless on ONNX Runtime -------------------------------
    def _token_ids(self, texts: list[str]) -> np.ndarray:
        ids: np.ndarray = self.tokenizer(texts).numpy()
        return ids

    def _image_vectors(self, pixels: np.ndarray) -> np.ndarray:
        if self.ort is not None:
            return super()._image_vectors(pixels)
        tensor = torch.from_numpy(pixels).to(self.device, non_blocking=True)
        return self._forward(self._image_fn, tensor)

    def _item_vectors(self, pixels: np.ndarray, texts: list[str]) -> np.ndarray:
        if self.ort is not None:
            return super()._item_vectors(pixels, texts)
        tensor = torch.from_numpy(pixels).to(self.device, non_blocking=True)
        return self._forward(self._item_fn, tensor, self.tokenizer(texts).to(self.device))

    @property
    def has_scene_cells(self) -> bool:
        """Whether `scene_cells` can run: the export's scene graph on ONNX Runtime, the
        model itself on PyTorch (a GPU worker's windows are then the web process's)."""
        if self.ort is not None:
            return super().has_scene_cells
        return self.model.image_is_cells_average

    def scene_cells(self, pixels: np.ndarray) -> np.ndarray:
        if self.ort is not None:
            return super().scene_cells(pixels)
        x = normalize_batch(torch.from_numpy(pixels[None]).to(self.device), self.preprocess)
        with torch.inference_mode(), self._autocast():
            cells = self.model.image_cells(x)[0]  # (h, w, D)
        out: np.ndarray = cells.float().cpu().numpy()
        return out

    def _image_pooled(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.ort is not None:
            return super()._image_pooled(pixels)
        x = normalize_batch(torch.from_numpy(pixels).to(self.device), self.preprocess)
        with torch.inference_mode(), self._autocast():
            trunk_pooled, tokens = self.model.image_trunk_features(x)
            emb = self.model.image_features_from_trunk(trunk_pooled, tokens)
        return emb.float().cpu().numpy(), trunk_pooled.float().cpu().numpy()

    def _text_vectors(self, texts: list[str]) -> np.ndarray:
        if self.ort is not None:
            return super()._text_vectors(texts)
        return self._forward(self.model.encode_text, self.tokenizer(texts).to(self.device))

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
    if onnx_backend_off():
        return False
    from embeddings.ml.onnx_runtime import supports_onnx

    return supports_onnx(loaded)
