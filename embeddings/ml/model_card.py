"""The MODEL_CARD.md written beside a trained checkpoint."""

from __future__ import annotations

import json
from typing import Any


def render_model_card(cfg: dict[str, Any], extra: str = "") -> str:
    """Return MODEL_CARD.md text for a checkpoint config (`extra` first, then details)."""
    tr = cfg.get("training", {})
    oc = cfg["open_clip_model_cfg"]
    losses = {k: round(v, 3) for k, v in tr.get("final_losses", {}).items()}
    lines = ["# Vitrine PinCLIP checkpoint", ""]
    if extra:
        lines += [extra.strip(), ""]
    lines += [
        "## Model",
        f"- Image tower: `{oc['vision_cfg'].get('timm_model_name') or 'open_clip ViT'}` at "
        f"{cfg['preprocess']['image_size']} px; text tower: "
        f"`{oc['text_cfg'].get('hf_model_name') or 'open_clip TextTransformer'}`; "
        f"embedding dimension {oc['embed_dim']}; hybrid fusion {cfg['fusion']}.",
        f"- Weights not in model.safetensors (loaded from their package): "
        f"{cfg.get('weights_exclude_prefixes') or 'none'}.",
        "",
        "## Data",
        f"- Dataset `{tr.get('dataset')}` ({tr.get('dataset_licence')}): "
        f"{tr.get('n_train_items')} training items, {tr.get('n_lookbooks')} lookbooks, "
        f"{len(tr.get('categories', []))} categories.",
        "",
        "## Recipe",
        f"- {tr.get('steps')} optimiser steps in {tr.get('train_seconds_this_call')} s "
        f"(whole call: data decoding, training, held-out evaluation); final losses {losses}.",
        "- Training config:",
        "",
        "```json",
        json.dumps(tr.get("train_config", {}), indent=2, sort_keys=True),
        "```",
    ]
    if tr.get("heldout_metrics"):
        from embeddings.ml import quickeval

        lines += [
            "",
            "## Held-out metrics",
            "",
            "```json",
            json.dumps(tr["heldout_metrics"], indent=2, sort_keys=True),
            "```",
            "",
            "Definitions (`embeddings/ml/quickeval.py`):",
            "",
            *(f"    {ln}" for ln in (quickeval.__doc__ or "").strip().splitlines()),
        ]
    return "\n".join(lines) + "\n"
