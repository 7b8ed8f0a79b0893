"""Item regions of a scene photo: candidate boxes, their crops, and non-maximum suppression.

Class-agnostic and download-free: the candidates are square windows at a few scales laid
over the photo (catalog product photos are square, one item on a plain background, so a
square window around a sofa or a lamp is what the image tower knows best). Which windows
hold an item is decided afterwards by how well each crop matches the catalog (the caller
encodes the crops with the active model and asks the index); `suppress_overlaps` then keeps
the best of each cluster of overlapping windows.

Two ways to a window's vector (`scene_encode`): crop each window and encode the crops
("crops", one trunk pass per window), or run the trunk once over the whole scene and average
the feature-map cells under each window ("featuremap", the export's scene graph: the image
embedding of the default model is a linear map of the trunk's average-pooled features, so
the average of the cells' embeddings is the embedding of the average). The second reads
each window with the context around it (the trunk's receptive field crosses its edges) at
the scene's scale rather than at the encoder's input size; bench/shop_the_look.py compares
the two.

No torch here: proposals are geometry, crops are PIL and numpy; `scene_encode` hands the
pixels to the encoder it is given, all in one call. Boxes are fractions 0..1 of the photo,
like `search.selectors.CropBox`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageOps

from embeddings.ml.images import ImageSource, decode_image, open_image
from embeddings.ml.serving import normalized

if TYPE_CHECKING:
    from embeddings.ml.serving import BatchEncoder


@dataclass(frozen=True)
class Box:
    """A region as fractions 0..1 of the photo's width and height."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def area(self) -> float:
        return max(0.0, self.right - self.left) * max(0.0, self.bottom - self.top)

    def iou(self, other: Box) -> float:
        """Intersection over union with `other` (0 when apart, 1 when equal)."""
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / (self.area + other.area - inter)

    def containment(self, other: Box) -> float:
        """Share of the smaller box that lies inside the other (1 when one holds the other)."""
        w = min(self.right, other.right) - max(self.left, other.left)
        h = min(self.bottom, other.bottom) - max(self.top, other.top)
        if w <= 0 or h <= 0:
            return 0.0
        return (w * h) / max(min(self.area, other.area), 1e-12)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.left, self.top, self.right, self.bottom)


@dataclass(frozen=True)
class WindowConfig:
    """Which windows to lay over a photo.

    Each scale is the window's side as a fraction of the photo's shorter side; windows step
    by `overlap_step` of their side, so neighbours overlap and an item is rarely cut in two.
    The defaults give 48 windows on a 4:3 photo (plus the whole photo); the bench
    (`bench/shop_the_look.py`) measures what one CPU core takes to encode and match them.
    `windows_recipe` names a config's windows: vectors of two recipes are not compared.
    """

    scales: tuple[float, ...] = (0.3, 0.5, 0.75)
    overlap_step: float = 0.75  # step between windows as a fraction of the window's side
    max_windows: int = 64  # hard cap, whatever the aspect ratio (a panorama)
    #: How windows become vectors: "crops" (each window cropped and encoded) or
    #: "featuremap" (one trunk pass over the scene, where the encoder has a scene graph;
    #: else crops). A change is safe for stored cover windows (matched only within one
    #: `windows_recipe`, re-encoded by the sweeper), but featuremap still picks worse
    #: hotspot boxes on the test scenes (README, shop-the-look encodings): crops stay.
    encoding: Literal["featuremap", "crops"] = "crops"
    #: The scene's shorter side for "featuremap", in pixels (rounded to the trunk's stride):
    #: at 480 the smallest window spans 4-5 cells; at 320 recall fell (README)
    map_short_side: int = 480


def windows_recipe(config: WindowConfig | None = None, *, on_map: bool) -> str:
    """Name how `config`'s windows become vectors, `on_map` when by the scene graph (what
    `scene_encode` does with an encoder that has one): two scenes' windows are comparable
    only when their recipes are equal (the lookbook covers' stored windows carry theirs).

    Everything that moves a window's vector is in it: where the windows lie (scales, step,
    cap) and the encoding, with the map's side for featuremap (crops are cut from a photo
    whose size follows from the scales and the encoder's input, both named already).
    """
    cfg = config or WindowConfig()
    scales = ",".join(f"{s:g}" for s in cfg.scales)
    encoding = f"featuremap@{cfg.map_short_side}" if on_map else "crops"
    return f"{encoding};scales={scales};step={cfg.overlap_step:g};max={cfg.max_windows}"


def scene_recipe(encoder: BatchEncoder, config: WindowConfig | None = None) -> str:
    """The `windows_recipe` that `scene_encode` uses with `encoder` and `config`."""
    cfg = config or WindowConfig()
    return windows_recipe(cfg, on_map=_on_map(encoder, cfg))


def _on_map(encoder: BatchEncoder, config: WindowConfig) -> bool:
    return config.encoding == "featuremap" and encoder.has_scene_cells


def windows_propose(*, width: int, height: int, config: WindowConfig | None = None) -> list[Box]:
    """Return the candidate windows of a `width` x `height` photo, largest scale first."""
    cfg = config or WindowConfig()
    short = min(width, height)
    boxes: list[Box] = []
    for scale in sorted(cfg.scales, reverse=True):
        side = scale * short
        step = max(1.0, side * cfg.overlap_step)
        for top in _positions(height, side, step):
            for left in _positions(width, side, step):
                boxes.append(
                    Box(left / width, top / height, (left + side) / width, (top + side) / height)
                )
    return boxes[: cfg.max_windows]


def _positions(length: int, side: float, step: float) -> list[float]:
    """Window starts covering [0, length] evenly, first and last flush with the edges."""
    if side >= length:
        return [0.0]
    count = int(np.ceil((length - side) / step)) + 1
    return [float(x) for x in np.linspace(0.0, length - side, count)]


def scene_open(source: ImageSource, *, short_side: int, max_side: int = 2048) -> Image.Image:
    """Return the scene photo decoded as RGB, upright, downscaled so that its shorter side
    is at most `short_side` (and its longer at most `max_side`, for a panorama).

    The caller asks for the short side at which its smallest window is as large as the
    encoder's input: finer pixels would only be averaged away when the crops are resized,
    and every crop resize reads fewer of them. JPEG draft mode decodes a 12-megapixel phone
    photo straight at 1/2, 1/4 or 1/8 scale.
    """
    img = open_image(source)
    w, h = img.size  # stored orientation: rotation swaps them, not the shorter side
    scale = min(1.0, short_side / min(w, h), max_side / max(w, h))
    img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))  # never below the size
    img = ImageOps.exif_transpose(img).convert("RGB")
    w, h = img.size
    scale = min(1.0, short_side / min(w, h), max_side / max(w, h))
    if scale < 1.0:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return img


def crops_pixels(image: Image.Image, boxes: Sequence[Box], *, side: int) -> np.ndarray:
    """Return each box's crop resized to `side` x `side`, as uint8 (len(boxes), 3, side,
    side): the pixels `Encoder.encode_pixels` takes, with no file format in between.

    PIL resizes straight from the box in the photo (no intermediate crop copy); its edges
    are rounded to whole pixels, as a crop of the photo would be.
    """
    w, h = image.size
    out = np.empty((len(boxes), side, side, 3), dtype=np.uint8)
    for i, box in enumerate(boxes):
        edges = (
            round(box.left * w),
            round(box.top * h),
            round(box.right * w),
            round(box.bottom * h),
        )
        resized = image.resize((side, side), Image.Resampling.BILINEAR, box=edges)
        out[i] = np.asarray(resized)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def suppress_overlaps(
    boxes: Sequence[Box],
    scores: Sequence[float],
    *,
    overlap_limit: float = 0.5,
    keep: int = 8,
    items: Sequence[Hashable] | None = None,
) -> list[int]:
    """Return the indices of the best-scoring boxes, best first, at most `keep`.

    Greedy non-maximum suppression: a box is dropped when more than `overlap_limit` of the
    smaller of it and a better box lies inside the other (containment rather than IoU, so a
    window inside a larger window of the same item goes too), or when it overlaps a better
    box at all and shows the same item (`items[i]`, e.g. its best match: windows tiling one
    sofa all find that sofa). Among equal scores the larger box wins: it holds more of the
    item.
    """
    order = sorted(range(len(boxes)), key=lambda i: (-scores[i], -boxes[i].area, i))
    kept: list[int] = []
    for i in order:
        clear = True
        for j in kept:
            inside = boxes[i].containment(boxes[j])
            if inside > overlap_limit or (
                inside > 0 and items is not None and items[i] == items[j]
            ):
                clear = False
                break
        if clear:
            kept.append(i)
            if len(kept) >= keep:
                break
    return kept


#: The trunk's output stride: one feature-map cell per this many pixels each way (32 for the
#: EfficientNet and ResNet trunks the scene graph is exported for). The scene is resized to
#: whole cells, so a window's edges map onto the map without a half-covered last cell.
MAP_STRIDE = 32


def scene_map_pixels(source: ImageSource, *, short_side: int) -> np.ndarray:
    """Return the scene photo upright as uint8 (3, H, W), H and W multiples of `MAP_STRIDE`,
    the shorter about `short_side` (the aspect ratio kept to within half a cell; a smaller
    photo is enlarged, as the crops of its windows would be)."""
    image = scene_open(source, short_side=short_side)
    w, h = image.size
    scale = short_side / min(w, h)
    size = (_whole_cells(w * scale), _whole_cells(h * scale))
    if size != (w, h):
        image = image.resize(size, Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))


def _whole_cells(pixels: float) -> int:
    return max(1, round(pixels / MAP_STRIDE)) * MAP_STRIDE


def cells_pool(cells: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
    """Return each box's vector (len(boxes), D), L2-normalised: the average of the cells
    (h, w, D) under it, each cell weighted by the share of it the box covers (a box's edge
    falls inside a cell when the window is not a whole number of cells)."""
    h, w, _ = cells.shape
    edges = np.array([b.as_tuple() for b in boxes], dtype=np.float64).reshape(-1, 4)

    def cover(lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
        starts = np.arange(n, dtype=np.float64)  # cell k spans [k, k + 1) in cell units
        low, high = (lo * n)[:, None], (hi * n)[:, None]
        return np.clip(np.minimum(high, starts + 1) - np.maximum(low, starts), 0.0, 1.0)

    rows = cover(edges[:, 1], edges[:, 3], h)  # (B, h)
    cols = cover(edges[:, 0], edges[:, 2], w)  # (B, w)
    rows /= np.maximum(rows.sum(1, keepdims=True), 1e-12)
    cols /= np.maximum(cols.sum(1, keepdims=True), 1e-12)
    # Rows first, then columns: two matrix products (B, h) x (h, w*D), not a 4-way einsum.
    by_row = (rows.astype(np.float32) @ cells.reshape(h, -1)).reshape(len(rows), w, -1)
    return normalized((cols.astype(np.float32)[:, None] @ by_row)[:, 0])  # (B, D)


@dataclass(frozen=True)
class SceneEncoding:
    """A scene photo's candidate item regions and their vectors, and the whole photo's."""

    boxes: list[Box]
    regions: np.ndarray  # (len(boxes), D) float32, L2-normalised, row i = boxes[i]
    whole: np.ndarray  # (D,) the whole photo, as encoding it alone would give it
    recipe: str  # how `regions` were made (`windows_recipe`)


def scene_encode(
    encoder: BatchEncoder, image_bytes: bytes, *, config: WindowConfig | None = None
) -> SceneEncoding:
    """Propose the windows of a scene photo and encode them and the whole photo. What the
    web app (`embeddings.runtime`) and the shop-the-look bench both run.

    "featuremap" (`WindowConfig.encoding`, where the encoder has a scene graph): the photo
    is decoded once at `map_short_side`, the scene graph runs once over it, and each
    window's vector is the average of the cells under it (`cells_pool`). "crops": the photo
    is decoded once, downscaled so its smallest window is about the encoder's input size,
    and every crop is resized from it and encoded, in one call of the image graph.

    Either way the whole photo is decoded as `encoder.encode_images` decodes it
    (`decode_image`) and encoded by the image graph, so its vector is the one a photo
    search with these bytes gets, and the one its lookbook cover got.

    Raises `ValueError` when the bytes are not a readable image.
    """
    cfg = config or WindowConfig()
    side = encoder.preprocess.image_size
    on_map = _on_map(encoder, cfg)
    recipe = windows_recipe(cfg, on_map=on_map)
    try:
        whole = decode_image(image_bytes, side, encoder.preprocess.resize_mode)
        if on_map:
            scene = scene_map_pixels(image_bytes, short_side=cfg.map_short_side)
        else:
            image = scene_open(image_bytes, short_side=math.ceil(side / min(cfg.scales)))
    except Exception as exc:  # any decoder error: the caller answers 400
        raise ValueError(f"unreadable image: {exc}") from exc
    if on_map:
        boxes = windows_propose(width=scene.shape[2], height=scene.shape[1], config=cfg)
        regions = cells_pool(encoder.scene_cells(scene), boxes)
        whole_vector = encoder.encode_pixels(whole[None])[0]
        return SceneEncoding(boxes=boxes, regions=regions, whole=whole_vector, recipe=recipe)
    boxes = windows_propose(width=image.width, height=image.height, config=cfg)
    pixels = np.concatenate([whole[None], crops_pixels(image, boxes, side=side)])
    vectors = encoder.encode_pixels(pixels)
    return SceneEncoding(boxes=boxes, regions=vectors[1:], whole=vectors[0], recipe=recipe)
