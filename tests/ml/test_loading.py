"""Loading every kind of model spec, and the errors for missing, corrupt, mismatched weights."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from embeddings.ml import DEFAULT_MODEL_FOLDERS, DEFAULT_MODEL_VERSION
from embeddings.ml.errors import ModelLoadError
from tests.ml.conftest import REPO, TINY_CFG


def python_in_fresh_process(
    code: str, *, env: dict[str, str], timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run `code` in a new interpreter at the repository root (nothing imported yet)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_open_clip_spec_with_a_checkpoint_file_loads_those_weights(
    tiny_arch: str, tiny_weights: Path
) -> None:
    from safetensors.torch import load_file

    from embeddings.ml.loading import load_model

    loaded = load_model(f"open_clip:{tiny_arch}:{tiny_weights}")
    saved = load_file(str(tiny_weights))
    state = loaded.model.backbone.state_dict()
    assert all(np.array_equal(state[k].numpy(), v.numpy()) for k, v in saved.items())
    assert loaded.dim == 32
    assert loaded.weights_sha256 == sha256(tiny_weights)


def test_random_open_clip_spec_is_the_same_model_every_time(tiny_arch: str) -> None:
    from embeddings.ml.loading import load_encoder

    a = load_encoder(f"open_clip:{tiny_arch}:random", device="cpu")
    b = load_encoder(f"open_clip:{tiny_arch}:random", device="cpu")
    texts = ["red dress", "blue shoe"]
    np.testing.assert_array_equal(a.encode_texts(texts), b.encode_texts(texts))
    assert a.weights_sha256 == b.weights_sha256


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonsense", "unknown model spec"),
        ("open_clip:NoSuchNet-B-99:random", "unknown open_clip architecture 'NoSuchNet-B-99'"),
        ("open_clip:vitrine-tiny:/nope/weights.safetensors", "weights file not found"),
        ("checkpoint:/nope/dir", "no config.json"),
    ],
)
def test_bad_specs_raise_model_load_error_naming_the_problem(
    tiny_arch: str, spec: str, message: str
) -> None:
    from embeddings.ml.loading import load_model

    with pytest.raises(ModelLoadError, match=message):
        load_model(spec)


def test_corrupt_weights_file_is_reported_as_corrupt(tiny_arch: str, tmp_path: Path) -> None:
    from embeddings.ml.loading import load_model

    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(ModelLoadError, match=r"broken\.safetensors is corrupt or unreadable"):
        load_model(f"open_clip:{tiny_arch}:{bad}")


def test_weights_of_another_architecture_are_reported_as_mismatch(
    tiny_arch: str, tmp_path: Path
) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    from embeddings.ml.loading import load_model

    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    wider = json.loads(json.dumps(TINY_CFG))
    wider["vision_cfg"]["width"] = 96
    (cfg_dir / "vitrine-tiny-wide.json").write_text(json.dumps(wider))
    open_clip.add_model_config(cfg_dir)
    torch.manual_seed(0)
    other = open_clip.create_model("vitrine-tiny-wide", pretrained=None)
    path = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(ModelLoadError, match=f"do not match architecture {tiny_arch}"):
        load_model(f"open_clip:{tiny_arch}:{path}")


# ---- checkpoint directories ------------------------------------------------------------
@pytest.fixture
def tiny_checkpoint(tiny_arch: str, tiny_weights: Path, tmp_path: Path) -> Path:
    """A checkpoint directory saved from the tiny open_clip model."""
    from embeddings.ml.loading import load_model, save_checkpoint

    loaded = load_model(f"open_clip:{tiny_arch}:{tiny_weights}")
    return save_checkpoint(loaded.model, loaded.config, tmp_path / "ckpt", "# tiny\n")


def test_checkpoint_dir_round_trips_the_model(
    tiny_arch: str, tiny_weights: Path, tiny_checkpoint: Path, photos: list[Path]
) -> None:
    from embeddings.ml.loading import load_encoder

    original = load_encoder(f"open_clip:{tiny_arch}:{tiny_weights}", device="cpu")
    again = load_encoder(f"checkpoint:{tiny_checkpoint}", device="cpu")
    assert again.weights_sha256 == sha256(tiny_checkpoint / "model.safetensors")
    assert again.dim == original.dim
    a = original.encode_items(photos[:2], ["red", "green"]).vectors
    b = again.encode_items(photos[:2], ["red", "green"]).vectors
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert (tiny_checkpoint / "MODEL_CARD.md").read_text() == "# tiny\n"


def test_checkpoint_without_weights_names_the_missing_file(tiny_checkpoint: Path) -> None:
    from embeddings.ml.loading import load_model

    (tiny_checkpoint / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"weights file not found: .*model\.safetensors"):
        load_model(f"checkpoint:{tiny_checkpoint}")


def test_checkpoint_with_corrupt_weights_says_corrupt(tiny_checkpoint: Path) -> None:
    from embeddings.ml.loading import load_model

    weights = tiny_checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated download
    with pytest.raises(ModelLoadError, match="corrupt or unreadable"):
        load_model(f"checkpoint:{tiny_checkpoint}")


def test_checkpoint_whose_config_disagrees_with_weights_says_mismatch(
    tiny_checkpoint: Path,
) -> None:
    from embeddings.ml.loading import load_model

    cfg_path = tiny_checkpoint / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["open_clip_model_cfg"]["embed_dim"] = 48
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"do not match architecture .*shape mismatch"):
        load_model(f"checkpoint:{tiny_checkpoint}")


# ---- hf-hub, through a fake Hugging Face cache, offline ------------------------------------
def test_hf_hub_spec_loads_from_the_hugging_face_cache_offline(
    tiny_weights: Path, tmp_path: Path, offline_env: dict[str, str]
) -> None:
    cache = tmp_path / "hf_cache"
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--vitrine--tiny-clip"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    (snapshot / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}})
    )
    (snapshot / "open_clip_model.safetensors").write_bytes(tiny_weights.read_bytes())
    env = {**offline_env, "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf_home")}
    code = (
        "import json; from embeddings.ml.loading import load_encoder\n"
        "e = load_encoder('open_clip:hf-hub:vitrine/tiny-clip', device='cpu')\n"
        "v = e.encode_texts(['a red dress'])\n"
        "print(json.dumps({'dim': e.dim, 'sha': e.weights_sha256, 'shape': list(v.shape),"
        " 'mean': list(e.preprocess.mean)}))\n"
    )
    out = python_in_fresh_process(code, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "dim": 32,
        "sha": sha256(tiny_weights),
        "shape": [1, 32],
        "mean": [0.5, 0.5, 0.5],
    }


def test_hf_hub_spec_offline_without_cache_raises_model_load_error(
    tmp_path: Path, offline_env: dict[str, str]
) -> None:
    env = {**offline_env, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path)}
    code = (
        "from embeddings.ml.loading import load_model\n"
        "from embeddings.ml.errors import ModelLoadError\n"
        "try:\n    load_model('open_clip:hf-hub:vitrine/absent')\n"
        "except ModelLoadError as e:\n    print('MLE', e)\n"
    )
    out = python_in_fresh_process(code, env=env)
    assert "MLE open_clip:hf-hub:vitrine/absent: cannot get open_clip_config.json" in out.stdout


def test_pretrained_tag_without_network_says_so(
    offline_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**offline_env, "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path)}
    code = (
        "from embeddings.ml.loading import load_model\n"
        "from embeddings.ml.errors import ModelLoadError\n"
        "try:\n    load_model('open_clip:ViT-B-32:laion2b_s34b_b79k')\n"
        "except ModelLoadError as e:\n    print('MLE', e)\n"
    )
    out = python_in_fresh_process(code, env=env)
    assert "MLE open_clip:ViT-B-32:laion2b_s34b_b79k: cannot fetch pretrained tag" in out.stdout


# ---- the bundled default model ---------------------------------------------------------------
DEFAULT_WEIGHTS = (
    REPO / "embeddings" / DEFAULT_MODEL_FOLDERS[DEFAULT_MODEL_VERSION] / "model.safetensors"
)
needs_default = pytest.mark.skipif(
    not DEFAULT_WEIGHTS.is_file(), reason="default model not trained yet"
)


@needs_default
def test_default_model_loads_offline_in_a_fresh_process(offline_env: dict[str, str]) -> None:
    code = (
        "import json, sys; from embeddings.ml.loading import load_encoder\n"
        "e = load_encoder('default', device='cpu')\n"
        "print(json.dumps({'dim': e.dim, 'sha': e.weights_sha256,"
        " 'torch_in_web': 'torch' in sys.modules}))\n"
    )
    out = python_in_fresh_process(code, env=offline_env)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dim"] == 256
    assert len(result["sha"]) == 64
    assert DEFAULT_WEIGHTS.stat().st_size <= 30 * 1024 * 1024


def test_importing_the_package_does_not_import_torch(offline_env: dict[str, str]) -> None:
    code = (
        "import sys, embeddings, embeddings.ml, embeddings.ml.errors, embeddings.ml.data\n"
        "print('torch' in sys.modules)\n"
    )
    out = python_in_fresh_process(code, env=offline_env, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


@needs_default
def test_default_model_ranks_matching_image_text_pairs_above_chance(datasets_root: Path) -> None:
    from embeddings.ml.data import load_clothing
    from embeddings.ml.default_recipe import HOLDOUT_FRACTION, MAX_SENDER_SHARE
    from embeddings.ml.loading import load_encoder

    ds = load_clothing(datasets_root / "clothing")
    _, held = ds.split_by_lookbook(HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE)
    items = held.items[::5][:120]  # held-out senders only: never trained on
    enc = load_encoder("default", device="cpu")
    images = enc.encode_images([held.image_file(it) for it in items])
    assert images.failed == {}
    texts = sorted({it.text for it in items})
    tvec = enc.encode_texts(texts)
    sims = images.vectors @ tvec.T  # (N, U)
    own = np.array([texts.index(it.text) for it in items])
    ranks = (sims > sims[np.arange(len(items)), own][:, None]).sum(1)  # 0 = best
    chance_mean_rank = (len(texts) - 1) / 2
    assert ranks.mean() < 0.6 * chance_mean_rank
    assert (ranks < 5).mean() > 2 * min(1.0, 5 / len(texts))
