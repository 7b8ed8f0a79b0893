"""PinCLIP: an open_clip backbone plus a hybrid fusion module, read top to bottom.

Three vectors come out of one model, all in the backbone's joint embedding space so they
can be compared with each other by cosine similarity:

- image embedding: the backbone's own image tower (``encode_image``), plus, when
  ``FusionConfig.image_reads_grid``, a linear map of the grid tokens (below);
- text embedding: the backbone's own text tower (``encode_text``);
- fused item embedding (``encode_item``): image + text of one catalog item. It is
  *hybrid*: a late part (the sum of the normalised image and text embeddings) plus an early
  part, a small transformer that reads the image at two granularities (the global
  embedding and a grid of pooled feature-map/patch tokens) together with the text tokens.
  The early part's output layer starts at zero, so an untrained fusion module gives
  exactly the late sum: a pretrained backbone is useful for items before any training.

Any backbone that open_clip builds works. The patch tokens come from open_clip's
``forward_intermediates`` (timm CNNs and ViTs, open_clip ViTs); a backbone without it
(e.g. open_clip's ModifiedResNet) falls back to the global embedding as its only token.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class FusionConfig:
    width: int = 256  # hidden width of the fusion transformer; small, it runs per item
    layers: int = 2  # transformer blocks; 2 is enough to mix two modalities of tokens
    heads: int = 4  # attention heads (width must divide by heads)
    grid: int = 4  # image feature map pooled to grid x grid tokens (the finer granularity)
    max_text_tokens: int = 32  # text tokens beyond this are ignored by fusion (not by text)
    dropout: float = 0.1  # dropout inside fusion blocks during training
    image_reads_grid: bool = False  # the image embedding adds a linear map of the grid
    #   tokens (each L2-normalised) to the pooled vector's projection: the pooled average
    #   loses a product photo's layout, which tells apart products that differ in cut

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the fields."""
        return asdict(self)


class TextTrunkOut(NamedTuple):
    """What the (possibly frozen, possibly cached) text trunk hands to the rest."""

    pooled: torch.Tensor  # (B, H) pooled trunk output, before the text projection
    states: torch.Tensor  # (B, T, H) per-token hidden states
    mask: torch.Tensor  # (B, T) bool, True where a real (non-padding) token is


class PinCLIP(nn.Module):
    """open_clip backbone + hybrid fusion. See the module docstring."""

    def __init__(self, backbone: nn.Module, fusion: FusionConfig, image_size: int) -> None:
        super().__init__()
        # Any: open_clip's CLIP/CustomTextCLIP expose different submodules; checked below.
        self.backbone: Any = backbone
        self.fusion_cfg = fusion
        bb: Any = backbone
        self.hf_text = hasattr(bb, "text") and hasattr(bb.text, "pooler")  # HF text tower
        self.pad_id = int(bb.text.config.pad_token_id) if self.hf_text else 0
        # Probe once with a dummy input: token sizes differ per architecture, and an
        # architecture without intermediates falls back to global-only fusion.
        self.grid_head: nn.Linear | None = None
        embed_dim, image_token_dim, n_image_tokens, text_dim = self._probe(image_size)
        self.embed_dim = embed_dim
        self.fusion = HybridFusion(fusion, embed_dim, image_token_dim, n_image_tokens, text_dim)
        self._grid_in = n_image_tokens * image_token_dim
        if fusion.image_reads_grid:
            self.add_grid_head()

    def add_grid_head(self) -> None:
        """Give the image embedding a grid-token term, starting at zero (the embedding is
        unchanged until it trains). Needs a timm trunk (`has_image_trunk`)."""
        if not self.has_image_trunk:
            raise ValueError("the image embedding reads grid tokens only from a timm trunk")
        head = nn.Linear(self._grid_in, self.embed_dim)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        self.grid_head = head
        self.fusion_cfg = replace(self.fusion_cfg, image_reads_grid=True)  # not shared

    # ---- image tower -------------------------------------------------------------------
    @property
    def has_image_trunk(self) -> bool:
        """Whether the image tower is a timm trunk + head, so trunk features can be cached."""
        visual = self.backbone.visual
        return hasattr(visual, "trunk") and hasattr(visual, "head")

    def image_trunk_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the trunk's (pooled features (B, F), grid tokens (B, N, C)): no projection.

        What a frozen trunk contributes, and so what `embeddings.ml.feature_cache` stores;
        `image_features_from_trunk` finishes the image path from it. Needs `has_image_trunk`.
        """
        trunk = self.backbone.visual.trunk
        final, inter = trunk.forward_intermediates(
            images, indices=1, norm=True, output_fmt="NCHW"
        )  # final (B, F, h, w); inter[-1] (B, C, h, w)
        pooled = trunk.forward_head(final)  # (B, F): the timm pool, no classifier
        return pooled, self._grid_tokens(inter[-1])  # (B, F), (B, g*g, C)

    def _grid_tokens(self, fmap: torch.Tensor) -> torch.Tensor:
        """The feature map (B, C, h, w) pooled to (B, g*g, C) grid tokens."""
        # adaptive_avg_pool2d as a matrix product: the same numbers, and it exports to ONNX
        # for any map size (the exporter only takes output sizes that divide the input).
        pool = _adaptive_pool_matrix(fmap.shape[-2], fmap.shape[-1], self.fusion_cfg.grid)
        tokens = fmap.flatten(2) @ pool.to(fmap.dtype)  # (B, C, g*g)
        return tokens.transpose(1, 2)

    # The trunk cut in two: training tunes the last blocks on cached activations entering them.
    def trunk_tail_prefixes(self, n: int) -> list[str]:
        """State-dict prefixes of the trunk's last `n` blocks and its head convolution: the
        part `image_trunk_tail` runs. Needs a timm EfficientNet-style trunk (stages of
        blocks, then conv_head + bn2, the grid tokens read from the last stage's output)."""
        trunk = self.backbone.visual.trunk
        if not self.has_image_trunk or not all(
            hasattr(trunk, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")
        ):
            raise ValueError("tuning the trunk's last blocks needs a timm EfficientNet trunk")
        if trunk.stage_ends[-1] != len(trunk.blocks):  # the grid tokens' map: the last stage
            raise ValueError("this trunk's grid tokens do not come from its last stage")
        blocks = [f"{s}.{b}" for s, stage in enumerate(trunk.blocks) for b in range(len(stage))]
        if not 1 <= n <= len(blocks):
            raise ValueError(f"the trunk has {len(blocks)} blocks: cannot tune the last {n}")
        prefix = "backbone.visual.trunk."
        return [
            *(f"{prefix}blocks.{name}." for name in blocks[len(blocks) - n :]),
            f"{prefix}conv_head.",
            f"{prefix}bn2.",
        ]

    def _trunk_blocks(self) -> list[nn.Module]:
        return [block for stage in self.backbone.visual.trunk.blocks for block in stage]

    def image_trunk_head_input(self, images: torch.Tensor, n: int) -> torch.Tensor:
        """Return the activation (B, C, h, w) entering the trunk's last `n` blocks."""
        self.trunk_tail_prefixes(n)  # the architecture check
        trunk = self.backbone.visual.trunk
        x = trunk.bn1(trunk.conv_stem(images))
        for block in self._trunk_blocks()[:-n]:
            x = block(x)
        return x

    def image_trunk_tail(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`image_trunk_features` from `image_trunk_head_input(images, n)`: the same numbers."""
        trunk = self.backbone.visual.trunk
        for block in self._trunk_blocks()[-n:]:
            x = block(x)  # the last block's output: the grid tokens' map (B, C, h, w)
        pooled = trunk.forward_head(trunk.bn2(trunk.conv_head(x)))  # (B, F)
        return pooled, self._grid_tokens(x)

    @property
    def image_is_cells_average(self) -> bool:
        """Whether a photo's image embedding is the average of its feature-map cells'
        (`image_cells`): a timm trunk with average pooling, an affine head (one linear layer,
        dropout), no grid term. Then one trunk pass over a scene gives any region's."""
        if not self.has_image_trunk or self.grid_head is not None:
            return False
        visual = self.backbone.visual
        if getattr(getattr(visual.trunk, "global_pool", None), "pool_type", None) != "avg":
            return False
        affine = (nn.Linear, nn.Dropout, nn.Identity, nn.Sequential)
        modules = list(visual.head.modules())
        linears = [m for m in modules if isinstance(m, nn.Linear)]
        return len(linears) == 1 and all(isinstance(m, affine) for m in modules)

    def image_cells(self, images: torch.Tensor) -> torch.Tensor:
        """Return the image embedding of each cell of the trunk's last feature map
        (B, h, w, D), unnormalised, for images (B, 3, H, W) of any size. Their average is
        the image embedding where `image_is_cells_average`."""
        trunk = self.backbone.visual.trunk
        fmap, _ = trunk.forward_intermediates(
            images, indices=1, norm=True, output_fmt="NCHW"
        )  # (B, F, h, w): what the pooled features average
        # The head on each cell: affine, so it commutes with the average.
        cells: torch.Tensor = self.backbone.visual.head(fmap.permute(0, 2, 3, 1))
        return cells  # (B, h, w, D)

    def image_features_from_trunk(self, pooled: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Return the image embedding (B, D), unnormalised, from the trunk's pooled features
        (B, F) and grid tokens (B, N, C)."""
        emb: torch.Tensor = self.backbone.visual.head(pooled)
        if self.grid_head is not None:
            emb = emb + self.grid_head(F.normalize(tokens, dim=-1).flatten(1))
        return emb

    def image_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (embedding (B, D) unnormalised, pooled grid tokens (B, N, C))."""
        visual = self.backbone.visual
        if self._use_intermediates and self.has_image_trunk:
            pooled, tokens = self.image_trunk_features(images)
            return self.image_features_from_trunk(pooled, tokens), tokens
        if self._use_intermediates:
            out = visual.forward_intermediates(
                images, indices=1, normalize_intermediates=True, output_fmt="NCHW"
            )
            fmap = out["image_intermediates"][-1]  # (B, C, H, W)
            emb = out["image_features"]  # (B, D)
            g = self.fusion_cfg.grid
            tokens = F.adaptive_avg_pool2d(fmap, (g, g))  # (B, C, g, g)
            tokens = tokens.flatten(2).transpose(1, 2)  # (B, g*g, C)
            return emb, tokens
        emb = visual(images)  # (B, D)
        return emb, emb[:, None, :]  # (B, 1, D)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Return image embeddings (B, D); only the global path runs (query-time speed)
        unless the embedding reads the grid tokens too."""
        if self.grid_head is not None:
            emb = self.image_features(images)[0]
        else:
            emb = self.backbone.visual(images)  # (B, D)
        return F.normalize(emb, dim=-1) if normalize else emb

    # ---- text tower --------------------------------------------------------------------
    def text_trunk(self, tokens: torch.Tensor) -> TextTrunkOut:
        """Run the text trunk on token ids (B, T); cacheable when the trunk is frozen."""
        mask = tokens != self.pad_id  # (B, T)
        if self.hf_text:
            pooled, states = self.hf_text_pass(tokens, mask.long())  # (B, H), (B, T, H)
            return TextTrunkOut(pooled, states, mask)
        # Native open_clip text transformer: pooled output is already projected, and the
        # projection belongs to the trunk (text_head is then the identity).
        out = self.backbone.forward_intermediates(
            text=tokens, text_indices=1, normalize=False, normalize_intermediates=True
        )
        return TextTrunkOut(out["text_features"], out["text_intermediates"][-1], mask)

    def hf_text_pass(
        self, tokens: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The Hugging Face text tower on token ids (B, T) and their 0/1 mask (B, T): the
        mean-pooled output (B, H) and the per-token states (B, T, H). The mask is an argument
        so the ONNX text graph (`onnx_runtime`) can take it as an input."""
        text = self.backbone.text
        out = text.transformer(input_ids=tokens, attention_mask=mask)
        return text.pooler(out, mask), out.last_hidden_state

    def without_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """`tokens` (B, T) cut after the longest text's last real token.

        The tokenizer pads every text to the context length; a masked BERT gives the same
        output without the trailing padding columns, and a shopper's 2-4 words then cost a
        fraction of the full context (64 -> 36 ms on one loaded core). open_clip's own text
        transformer needs exactly its context length, so its tokens are left alone. (Not
        done inside `text_trunk`: cached trunk outputs are stacked and need one length.)
        """
        if not self.hf_text or not tokens.numel():
            return tokens
        longest = max(1, int((tokens != self.pad_id).sum(1).max()))
        return tokens[:, :longest]

    def text_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """Project pooled trunk output (B, H) into the joint space (B, D)."""
        return self.backbone.text.proj(pooled) if self.hf_text else pooled

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """Return text embeddings (B, D) for token ids (B, T)."""
        emb = self.text_head(self.text_trunk(self.without_padding(tokens)).pooled)  # (B, D)
        return F.normalize(emb, dim=-1) if normalize else emb

    # ---- fused item --------------------------------------------------------------------
    def forward_from_features(
        self,
        img_emb: torch.Tensor,
        img_tokens: torch.Tensor,
        trunk: TextTrunkOut,
        fuse_rows: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`forward_all` from image features (B, D), (B, N, C) and text trunk outputs.

        With `fuse_rows` (R,) only those rows are fused: "fused" is then (R, D) (training
        on cached features fuses a sub-batch, the fusion being most of a step's cost).
        """
        txt_emb = self.text_head(trunk.pooled)  # (B, D)
        if fuse_rows is None:
            fused = self.fusion(img_emb, img_tokens, txt_emb, trunk.states, trunk.mask)
        else:
            r = fuse_rows
            fused = self.fusion(
                img_emb[r], img_tokens[r], txt_emb[r], trunk.states[r], trunk.mask[r]
            )  # (R, D)
        return {
            "image": F.normalize(img_emb, dim=-1),
            "text": F.normalize(txt_emb, dim=-1),
            "fused": F.normalize(fused, dim=-1),
        }

    def forward_all(
        self, images: torch.Tensor, text: torch.Tensor | TextTrunkOut
    ) -> dict[str, torch.Tensor]:
        """Return normalised "image", "text" and "fused" embeddings, each (B, D).

        `text` is token ids (B, T) or a precomputed `TextTrunkOut` (training with a frozen,
        cached text trunk).
        """
        if isinstance(text, TextTrunkOut):
            trunk = text
        else:
            trunk = self.text_trunk(self.without_padding(text))
        img_emb, img_tokens = self.image_features(images)  # (B, D), (B, N, C)
        return self.forward_from_features(img_emb, img_tokens, trunk)

    def encode_item(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Return fused, normalised item embeddings (B, D)."""
        return self.forward_all(images, tokens)["fused"]

    @property
    def logit_scale(self) -> torch.Tensor:
        """The backbone's learned temperature (log scale), shared by all objectives."""
        scale: torch.Tensor = self.backbone.logit_scale
        return scale

    # ---- construction helpers ---------------------------------------------------------
    @torch.no_grad()
    def _probe(self, image_size: int) -> tuple[int, int, int, int]:
        was_training = self.backbone.training
        self.backbone.eval()
        image = torch.zeros(1, 3, image_size, image_size)
        # open_clip's own text transformer needs exactly its context length; HF does not.
        n_tokens = 4 if self.hf_text else int(self.backbone.context_length)
        tokens = torch.full((1, n_tokens), 1, dtype=torch.long)
        try:
            self._use_intermediates = True
            emb, img_tokens = self.image_features(image)
        except (AttributeError, NotImplementedError, TypeError, AssertionError):
            self._use_intermediates = False
            emb, img_tokens = self.image_features(image)
        text_dim = self.text_trunk(tokens).states.shape[-1]
        self.backbone.train(was_training)
        return emb.shape[-1], img_tokens.shape[-1], img_tokens.shape[1], text_dim


@functools.lru_cache(maxsize=16)
def _adaptive_pool_matrix(h: int, w: int, g: int) -> torch.Tensor:
    """Return (h*w, g*g): column k averages the cells adaptive_avg_pool2d puts in output k."""
    h, w = int(h), int(w)
    pool = torch.zeros(h * w, g * g)
    for i in range(g):
        r0, r1 = (i * h) // g, -((-(i + 1) * h) // g)  # floor and ceil, as PyTorch does
        for j in range(g):
            c0, c1 = (j * w) // g, -((-(j + 1) * w) // g)
            cells = [r * w + c for r in range(r0, r1) for c in range(c0, c1)]
            pool[cells, i * g + j] = 1.0 / len(cells)
    return pool


class HybridFusion(nn.Module):
    """Fuse global + grid image tokens with text tokens into one item embedding (B, D)."""

    def __init__(
        self,
        cfg: FusionConfig,
        embed_dim: int,
        image_token_dim: int,
        n_image_tokens: int,
        text_dim: int,
    ) -> None:
        super().__init__()
        w = cfg.width
        self.max_text_tokens = cfg.max_text_tokens
        self.cls = nn.Parameter(torch.zeros(1, 1, w))
        # One input map per token kind; LayerNorm first because trunks differ in scale.
        self.embed_global = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, w))
        self.embed_patch = nn.Sequential(
            nn.LayerNorm(image_token_dim), nn.Linear(image_token_dim, w)
        )
        self.embed_text = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, w))
        # Kinds: 0 image global, 1 image grid, 2 text global, 3 text token.
        self.type_embed = nn.Parameter(torch.randn(4, w) * 0.02)
        self.patch_pos = nn.Parameter(torch.randn(1, n_image_tokens, w) * 0.02)
        layer = nn.TransformerEncoderLayer(
            w, cfg.heads, 4 * w, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(w)
        self.out = nn.Linear(w, embed_dim)
        # Zero-init: untrained fusion == late fusion (normalised image + text), see above.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        img_emb: torch.Tensor,
        img_tokens: torch.Tensor,
        txt_emb: torch.Tensor,
        txt_states: torch.Tensor,
        txt_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Return the fused (unnormalised) item embedding (B, D)."""
        # Trailing padding columns carry nothing: cut them (short catalog titles are
        # ~10 tokens of a 32-77 token context, so this halves the fusion's work).
        t = self.text_tokens_kept(txt_mask)
        return self.fuse(img_emb, img_tokens, txt_emb, txt_states[:, :t], txt_mask[:, :t])

    def text_tokens_kept(self, txt_mask: torch.Tensor) -> int:
        """Return how many leading text tokens fusion reads for this batch's mask (B, T)."""
        longest = int(txt_mask.sum(1).max()) if txt_mask.numel() else 1
        return max(1, min(longest, self.max_text_tokens))

    def fuse(
        self,
        img_emb: torch.Tensor,
        img_tokens: torch.Tensor,
        txt_emb: torch.Tensor,
        txt_states: torch.Tensor,
        txt_mask: torch.Tensor,
    ) -> torch.Tensor:
        """`forward` on text states (B, T, H) already cut to `text_tokens_kept` (exportable)."""
        b, n = img_tokens.shape[:2]
        dtype = self.cls.dtype
        x = torch.cat(
            [
                self.cls.expand(b, -1, -1),  # (B, 1, W)
                self.embed_global(img_emb.to(dtype))[:, None] + self.type_embed[0],  # (B, 1, W)
                self.embed_patch(img_tokens.to(dtype)) + self.type_embed[1] + self.patch_pos,
                self.embed_global(txt_emb.to(dtype))[:, None] + self.type_embed[2],  # (B, 1, W)
                self.embed_text(txt_states.to(dtype)) + self.type_embed[3],  # (B, T, W)
            ],
            dim=1,
        )  # (B, 3 + N + T, W)
        keep = torch.ones(b, 3 + n, dtype=torch.bool, device=x.device)
        ignore = ~torch.cat([keep, txt_mask], dim=1)  # (B, 3 + N + T), True = padding
        x = self.blocks(x, src_key_padding_mask=ignore)  # (B, 3 + N + T, W)
        early = self.out(self.ln(x[:, 0]))  # (B, D)
        late = F.normalize(img_emb.float(), dim=-1) + F.normalize(txt_emb.float(), dim=-1)
        return late + early.float()  # (B, D)
