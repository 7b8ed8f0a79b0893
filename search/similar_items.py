"""How "similar items" weighs a product's vectors: one fact for the selector and the bench.

A product's fused vector (photo and words together) alone lets colour and pose outweigh
what the product is: of an H&M article's 10 nearest, 67% were of its product type. Adding
the cosine of its own text vector, which names the type, raised that to 87% and found a
colour variant more often too (`bench/relevance.py`, the weight chosen on the product codes
it does not hold out). Framework-free, so the bench reads it without Django.
"""

from __future__ import annotations

#: vector kind -> weight of its cosine in the similar-items score
SIMILAR_ITEMS_WEIGHTS: dict[str, float] = {"fused": 1.0, "text": 2.0}
#: Each kind's index is asked for this many times the page, then all candidates are scored.
SIMILAR_ITEMS_POOL_FACTOR = 4
