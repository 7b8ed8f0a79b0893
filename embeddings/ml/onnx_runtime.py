"""CPU inference on ONNX Runtime: the towers, projections and fusion exported once per weights.

PyTorch eager runs depthwise convolutions (EfficientNet) several times slower than ONNX
Runtime's CPU provider, so on a CPU the encoder runs three exported graphs instead:

- ``image.onnx``: normalised pixels (B, 3, S, S) -> image embedding (B, D), grid tokens
  (B, N, C), the trunk's pooled features (B, F) (what `embeddings.ml.image_classes` reads);
- ``text.onnx``: token ids (B, T) + mask (B, T) -> text embedding (B, D), token states
  (B, T, H);
- ``fusion.onnx``: the five tensors above (text cut to the tokens fusion reads) -> fused
  embedding (B, D).

Graphs are exported lazily into ``<onnx_dir>/<weights sha256>.<EXPORT_LAYOUT>/`` (a new
checksum, a new folder: changed weights are never served from an old export, nor graphs of
an older layout) by writing to a temporary folder and renaming it, so two processes
exporting at once never see half a folder. With `int8`, the image graph runs quantized
where shipped calibration holds for the model (`embeddings.ml.onnx_int8`; the quantized
graph is cached in the same folder).
PyTorch stays the path for training and for GPUs. onnxruntime is imported here only, and
only when a session is built.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from embeddings.ml.loading import LoadedModel
    from embeddings.ml.model import PinCLIP, TextTrunkOut

log = logging.getLogger(__name__)

EXPORT_FORMAT = "vitrine-onnx/2"
#: Bumped when the graphs' inputs or outputs change (2: the image graph's pooled features):
#: part of the export folder's name, so an older export in the same folder is not read.
EXPORT_LAYOUT = 2
OPSET = 17
GRAPHS = ("image", "text", "fusion")


def supports_onnx(loaded: LoadedModel) -> bool:
    """Whether this model's graphs can be exported (timm image trunk + Hugging Face text)."""
    return bool(loaded.model.has_image_trunk and loaded.model.hf_text)


def export_dir(onnx_dir: Path, weights_sha256: str) -> Path:
    """Return the folder that holds (or will hold) the export of these weights."""
    return Path(onnx_dir) / f"{weights_sha256}.{EXPORT_LAYOUT}"


def onnx_export(loaded: LoadedModel, onnx_dir: Path) -> Path:
    """Export `loaded`'s graphs under `onnx_dir` unless already there; return the folder."""
    if not loaded.weights_sha256:
        raise ValueError("an export is keyed by the weights' checksum: this model has none")
    final = export_dir(onnx_dir, loaded.weights_sha256)
    if (final / "meta.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=final.parent))
    try:
        _export_graphs(loaded, tmp)
        (tmp / "meta.json").write_text(
            json.dumps(
                {
                    "format": EXPORT_FORMAT,
                    "weights_sha256": loaded.weights_sha256,
                    "spec": loaded.spec,
                    "torch": torch.__version__,
                    "opset": OPSET,
                },
                indent=2,
            )
        )
        try:
            tmp.rename(final)
        except OSError:  # another process finished first: use its export
            if not (final / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass
class OrtModel:
    """The three ONNX Runtime sessions of one model's export."""

    image_session: Any
    text_session: Any
    fusion_session: Any
    pad_id: int
    max_text_tokens: int
    image_int8: bool = False  # the image graph is the quantized one (`onnx_int8`)

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


def ort_model_load(
    loaded: LoadedModel, onnx_dir: Path, threads: int, int8: bool = False
) -> OrtModel:
    """Export if needed and return ONNX Runtime sessions for `loaded` on `threads` threads.

    With `int8`, the image graph is the int8 one when shipped calibration holds for this
    model (quantized once, then cached); otherwise, and for text and fusion, float.
    """
    import onnxruntime as ort

    folder = onnx_export(loaded, onnx_dir)
    image = folder / "image.onnx"
    if int8:
        from embeddings.ml.onnx_int8 import int8_image_graph

        image = int8_image_graph(loaded, folder) or image
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]

    def session(path: Path) -> Any:
        return ort.InferenceSession(str(path), options, providers=providers)

    return OrtModel(
        session(image),
        session(folder / "text.onnx"),
        session(folder / "fusion.onnx"),
        pad_id=loaded.model.pad_id,
        max_text_tokens=loaded.model.fusion.max_text_tokens,
        image_int8=image.name != "image.onnx",
    )


# ---- export --------------------------------------------------------------------------------
class _ImageGraph(nn.Module):
    def __init__(self, model: PinCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled, tokens = self.model.image_trunk_features(pixels)  # (B, F), (B, N, C)
        return self.model.image_features_from_trunk(pooled, tokens), tokens, pooled


class _TextGraph(nn.Module):
    def __init__(self, model: PinCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled, states = self.model.hf_text_pass(tokens, mask)  # (B, H), (B, T, H)
        return self.model.text_head(pooled), states  # (B, D), (B, T, H)


class _FusionGraph(nn.Module):
    def __init__(self, model: PinCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        # img_emb, img_tokens, txt_emb, txt_states, txt_mask: `HybridFusion.fuse`'s arguments.
        return self.model.fusion.fuse(*inputs)  # (B, D)


def _export_graphs(loaded: LoadedModel, out: Path) -> None:
    # A copy: the exporter's passes (batch-norm folding among them) may write into the
    # parameters they trace, and the torch model must stay exactly what was loaded.
    model = copy.deepcopy(loaded.model).float().eval()
    with _traceable(model):
        _export_three(model, loaded.preprocess.image_size, out)


@contextlib.contextmanager
def _traceable(model: PinCLIP) -> Iterator[None]:
    """Attention paths the ONNX tracer can follow, for the duration of an export."""
    text_model: Any = model.backbone.text.transformer
    old_attn = getattr(text_model.config, "_attn_implementation", None)
    # The SDPA path builds its mask with shape-dependent Python code the tracer freezes;
    # the eager attention is plain tensor algebra and traces for any length.
    text_model.config._attn_implementation = "eager"
    # The fused "fast path" kernel of nn.TransformerEncoderLayer (eval mode) has no ONNX form.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        text_model.config._attn_implementation = old_attn
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _export_three(model: PinCLIP, size: int, out: Path) -> None:
    b, t = 2, 8
    pixels = torch.randn(b, 3, size, size)
    tokens = torch.randint(1000, 2000, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        img_emb, img_tokens = model.image_features(pixels)
        txt_emb, states = _TextGraph(model)(tokens, mask)
    fusion_t = model.fusion.max_text_tokens  # the fusion graph's fixed text length
    fusion_states = torch.zeros(b, fusion_t, states.shape[-1])
    fusion_mask = torch.zeros(b, fusion_t, dtype=torch.bool)
    fusion_states[:, :t], fusion_mask[:, :t] = states[:, :fusion_t], mask[:, :fusion_t].bool()
    batch = {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints: expected
        _export(
            _ImageGraph(model),
            (pixels,),
            out / "image.onnx",
            ["pixels"],
            ["image", "tokens", "pooled"],
            {"pixels": batch, "image": batch, "tokens": batch, "pooled": batch},
        )
        seq = {0: "batch", 1: "length"}
        _export(
            _TextGraph(model),
            (tokens, mask),
            out / "text.onnx",
            ["tokens", "mask"],
            ["text", "states"],
            {"tokens": seq, "mask": seq, "text": batch, "states": seq},
        )
        _export(
            _FusionGraph(model),
            (img_emb, img_tokens, txt_emb, fusion_states, fusion_mask),
            out / "fusion.onnx",
            ["img_emb", "img_tokens", "txt_emb", "txt_states", "txt_mask"],
            ["fused"],
            {
                "img_emb": batch,
                "img_tokens": batch,
                "txt_emb": batch,
                "txt_states": batch,
                "txt_mask": batch,
                "fused": batch,
            },
        )


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
) -> None:
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,  # the TorchScript exporter: no onnxscript needed, and it handles BERT
    )
    log.info("exported %s (%.1f MB)", path.name, path.stat().st_size / 1e6)


# ---- the frozen trunks alone (feature caching for training) -------------------------------
# Sessions of ONE intra-op thread, which callers run on several batches at once (one batch
# per core, `onnxruntime` releases the GIL): on a CPU shared with other work, an op split
# across threads waits at every barrier for a thread the OS has descheduled, and a 2-thread
# session ran slower than a 1-thread one under load 6 (bench/results/fine_tune.json).
def _trunk_session(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    inputs: list[str],
    outputs: list[str],
    axes: dict[str, dict[int, str]],
) -> Any:
    """Export `module` to a temporary file and return a 1-thread CPU session of it."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="vitrine-trunk-") as tmp:
        path = Path(tmp) / "trunk.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints: expected
            _export(module, args, path, inputs, outputs, axes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The session holds the graph in memory: the file may go with the folder.
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _TrunkGraph(nn.Module):
    def __init__(self, model: PinCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.image_trunk_features(pixels)  # (B, F), (B, G, C)


class _TrunkHeadInputGraph(nn.Module):
    def __init__(self, model: PinCLIP, tail_blocks: int) -> None:
        super().__init__()
        self.model = model
        self.tail_blocks = tail_blocks

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.image_trunk_head_input(pixels, self.tail_blocks)  # (B, C, h, w)


class OrtTrunk:
    """The image trunk's (pooled features, grid tokens) on ONNX Runtime, exported to a
    temporary folder: what `embeddings.ml.feature_cache` runs over a catalog's photos on a
    CPU, where PyTorch eager runs EfficientNet's depthwise convolutions several times slower.
    One thread a call; call it from several threads at once (see above). With
    `tail_blocks`, what enters the trunk's last this many blocks instead (training tunes them).
    """

    def __init__(self, model: PinCLIP, image_size: int, tail_blocks: int = 0) -> None:
        trunk = copy.deepcopy(model).float().eval()
        outputs = ["head_input"] if tail_blocks else ["pooled", "tokens"]
        self.session = _trunk_session(
            _TrunkHeadInputGraph(trunk, tail_blocks) if tail_blocks else _TrunkGraph(trunk),
            # Its own generator: a run's global random stream (its heads' init)
            # must not depend on whether its features came from the cache.
            (torch.randn(2, 3, image_size, image_size, generator=torch.Generator()),),
            ["pixels"],
            outputs,
            {name: {0: "batch"} for name in ["pixels", *outputs]},
        )

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(pooled (B, F), tokens (B, G, C)) of normalised pixels (B, 3, S, S); with
        `tail_blocks`, (what enters them (B, C, h, w),)."""
        outs = self.session.run(None, {"pixels": pixels.float().numpy()})
        return tuple(torch.from_numpy(out) for out in outs)


class _TextTrunkGraph(nn.Module):
    def __init__(self, model: PinCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.hf_text_pass(tokens, mask)  # (B, H), (B, T, H)


class OrtTextTrunk:
    """The Hugging Face text trunk's (pooled output, token states) on ONNX Runtime: what
    `embeddings.ml.train_data.build_text_cache` runs over a catalog's texts on a CPU (the
    frozen MiniLM, run once per text). One thread a call, like `OrtTrunk`.
    """

    def __init__(self, model: PinCLIP) -> None:
        if not model.hf_text:
            raise ValueError("the ONNX text trunk needs a Hugging Face text tower")
        trunk = copy.deepcopy(model).float().eval()
        seq = {0: "batch", 1: "length"}
        tokens = torch.randint(1000, 2000, (2, 8), generator=torch.Generator())
        mask = torch.ones(2, 8, dtype=torch.long)
        mask[1, 5:] = 0
        with _traceable(trunk):
            self.session = _trunk_session(
                _TextTrunkGraph(trunk),
                (tokens, mask),
                ["tokens", "mask"],
                ["pooled", "states"],
                {"tokens": seq, "mask": seq, "pooled": {0: "batch"}, "states": seq},
            )
        self.pad_id = model.pad_id

    def __call__(self, tokens: torch.Tensor) -> TextTrunkOut:
        """`PinCLIP.text_trunk` of token ids (B, T): pooled (B, H), states (B, T, H), mask.

        The trunk runs on the columns up to the longest text's last real token (trailing
        padding changes nothing a masked BERT computes for real tokens); the states of the
        padding columns are returned as zeros.
        """
        from embeddings.ml.model import TextTrunkOut

        mask = tokens != self.pad_id  # (B, T)
        longest = max(1, int(mask.sum(1).max())) if tokens.numel() else 1
        pooled, cut = self.session.run(
            None,
            {
                "tokens": tokens[:, :longest].numpy().astype(np.int64),
                "mask": mask[:, :longest].numpy().astype(np.int64),
            },
        )  # (B, H), (B, longest, H)
        states = torch.zeros(*tokens.shape, cut.shape[-1])  # (B, T, H)
        states[:, :longest] = torch.from_numpy(cut)
        return TextTrunkOut(torch.from_numpy(pooled), states, mask)
