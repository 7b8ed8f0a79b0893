"""CPU inference on ONNX Runtime: the towers, projections and fusion exported once per weights.

PyTorch eager runs depthwise convolutions (EfficientNet) several times slower than ONNX
Runtime's CPU provider, so on a CPU the encoder runs three exported graphs instead:

- ``image.onnx``: normalised pixels (B, 3, S, S) -> image embedding (B, D), grid tokens
  (B, N, C), the trunk's pooled features (B, F) (what `embeddings.ml.image_classes` reads);
- ``text.onnx``: token ids (B, T) + mask (B, T) -> text embedding (B, D), token states
  (B, T, H);
- ``fusion.onnx``: the five tensors above (text cut to the tokens fusion reads) -> fused
  embedding (B, D);
- ``scene.onnx`` (models whose `image_is_cells_average`): normalised pixels (B, 3, H, W) of any
  size -> the image embedding of each cell of the trunk's last feature map (B, h, w, D),
  unnormalised: one pass over a scene photo gives every region's vector by averaging the
  cells under it (`embeddings.ml.regions`), where cropping and encoding each region ran
  the trunk once per region.

Graphs are exported lazily into ``<onnx_dir>/<weights sha256>.<EXPORT_LAYOUT>/`` (a new
checksum, a new folder: changed weights are never served from an old export, nor graphs of
an older layout) by writing to a temporary folder and renaming it, so two processes
exporting at once never see half a folder. With `int8`, the image graph runs quantized
where shipped calibration holds for the model (`embeddings.ml.onnx_int8`; the quantized
graph is cached in the same folder). Loading also writes what a process without torch
needs to serve the export (`serving_write`; read by `embeddings.ml.serving`, where the
sessions are built).
PyTorch stays the path for training and for GPUs. onnxruntime is imported only when a
session is built.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from embeddings.ml.serving import (
    CLASSES_FILE,
    FLOAT_GRAPH,
    SCENE_GRAPH,
    SERVING_FORMAT,
    TOKENIZER_FILE,
    OrtModel,
    export_dir,
    image_graph_key,
    ort_model_open,
    serving_manifest_write,
)

if TYPE_CHECKING:
    from embeddings.ml.loading import LoadedModel
    from embeddings.ml.model import PinCLIP, TextTrunkOut

log = logging.getLogger(__name__)

EXPORT_FORMAT = "vitrine-onnx/2"
OPSET = 17
GRAPHS = ("image", "text", "fusion")


def supports_onnx(loaded: LoadedModel) -> bool:
    """Whether this model's graphs can be exported (timm image trunk + Hugging Face text)."""
    return bool(loaded.model.has_image_trunk and loaded.model.hf_text)


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


def ort_model_load(
    loaded: LoadedModel, onnx_dir: Path, threads: int, int8: bool = False
) -> OrtModel:
    """Export if needed and return ONNX Runtime sessions for `loaded` on `threads` threads.

    With `int8`, the image graph is the int8 one when shipped calibration holds for this
    model (quantized once, then cached); otherwise, and for text and fusion, float. The
    export's `serving.json` records the graph chosen, so a process without torch serves
    the same one (`embeddings.ml.serving`).
    """
    folder = onnx_export(loaded, onnx_dir)
    image = folder / FLOAT_GRAPH
    scene: Path | None = folder / SCENE_GRAPH if (folder / SCENE_GRAPH).is_file() else None
    if int8:
        from embeddings.ml.onnx_int8 import int8_image_graph

        image = int8_image_graph(loaded, folder) or image
        if scene is not None:
            # The scene graph is the same trunk under the same node names: the shipped
            # ranges quantize it as they do the image graph.
            scene = int8_image_graph(loaded, folder, graph=SCENE_GRAPH) or scene
    key = image_graph_key(int8)
    serving_write(
        loaded, folder, {key: image.name}, scene_graphs={key: scene.name} if scene else {}
    )
    return ort_model_open(
        folder,
        image.name,
        threads=threads,
        pad_id=loaded.model.pad_id,
        max_text_tokens=loaded.model.fusion.max_text_tokens,
        scene_graph=scene.name if scene else None,
    )


def serving_write(
    loaded: LoadedModel,
    folder: Path,
    image_graphs: dict[str, str],
    scene_graphs: dict[str, str] | None = None,
) -> None:
    """Write what a process without torch needs to serve `loaded` from its export
    (`embeddings.ml.serving`): the manifest, the tokenizer file, the trunk's classifier.

    `image_graphs` (`scene_graphs`): the image (scene) graph file per
    `serving.image_graph_key`. Nothing is written
    for a tokenizer the `tokenizers` library cannot reproduce: such a model is served by
    its full encoder.
    """
    tokenizer = _serving_tokenizer(loaded, folder)
    if tokenizer is None:
        return
    classes = loaded.image_classes
    if classes is not None and not (folder / CLASSES_FILE).is_file():
        with tempfile.NamedTemporaryFile(dir=folder, suffix=".npz", delete=False) as f:
            np.savez(f, weight=classes.weight, bias=classes.bias)
        Path(f.name).replace(folder / CLASSES_FILE)
    serving_manifest_write(
        folder,
        {
            "format": SERVING_FORMAT,
            "spec": loaded.spec,
            "weights_sha256": loaded.weights_sha256,
            "dim": loaded.dim,
            "preprocess": loaded.preprocess.to_dict(),
            "pad_id": loaded.model.pad_id,
            "max_text_tokens": loaded.model.fusion.max_text_tokens,
            "tokenizer": tokenizer,
            "image_classes": classes.source if classes is not None else None,
            "image_graphs": image_graphs,
            "scene_graphs": scene_graphs or {},
        },
    )


def _serving_tokenizer(loaded: LoadedModel, folder: Path) -> dict[str, Any] | None:
    """Save `loaded`'s tokenizer as `tokenizer.json` in `folder` and return what
    `serving.TextTokenizer` needs besides it; None unless it is open_clip's `HFTokenizer`
    on a fast tokenizer with the "whitespace" cleaning."""
    from open_clip.tokenizer import HFTokenizer, _clean_whitespace

    tok = loaded.tokenizer
    if not isinstance(tok, HFTokenizer) or tok.clean_fn is not _clean_whitespace:
        return None
    hf = tok.tokenizer
    if not hf.is_fast or tok.tokenizer_mode or hf.pad_token_id is None:
        return None
    if not (folder / TOKENIZER_FILE).is_file():
        backend = copy.deepcopy(hf.backend_tokenizer)
        backend.no_truncation()  # the serving side sets them as transformers does per call
        backend.no_padding()
        fd, tmp = tempfile.mkstemp(prefix=".tokenizer-", suffix=".json", dir=folder)
        os.close(fd)
        backend.save(tmp)
        Path(tmp).replace(folder / TOKENIZER_FILE)
    return {
        "context_length": tok.context_length,
        "pad_id": hf.pad_token_id,
        "pad_token": hf.pad_token,
        "pad_type_id": hf.pad_token_type_id,
        "padding_side": hf.padding_side,
        "truncation_side": hf.truncation_side,
        "strip_sep_token": tok.strip_sep_token,
        "sep_id": hf.sep_token_id,
    }


# ---- export --------------------------------------------------------------------------------
class _ImageGraph(nn.Module):
    def __init__(self, model: PinCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled, tokens = self.model.image_trunk_features(pixels)  # (B, F), (B, N, C)
        return self.model.image_features_from_trunk(pooled, tokens), tokens, pooled


class _SceneGraph(nn.Module):
    def __init__(self, model: PinCLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # The trunk as the image graph runs it (same node names: the int8 ranges hold).
        return self.model.image_cells(pixels)  # (B, h, w, D)


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
        if model.image_is_cells_average:
            plane = {0: "batch", 2: "height", 3: "width"}
            _export(
                _SceneGraph(model),
                (torch.randn(1, 3, 2 * size, 3 * size),),
                out / SCENE_GRAPH,
                ["pixels"],
                ["cells"],
                {"pixels": plane, "cells": {0: "batch", 1: "height", 2: "width"}},
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
