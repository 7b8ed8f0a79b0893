"""pgvector SQL the apps share: how a vector is written as a literal.

One formatting for every writer and reader: 6 significant digits, more than a halfvec
(about 3) keeps, so a stored vector and a query vector round the same way.
"""

from __future__ import annotations

from collections.abc import Iterable


def vector_literal(vector: Iterable[float]) -> str:
    """`vector` as pgvector's text form (`[0.1,0.2,…]`), for a `%s::halfvec(<dim>)` parameter."""
    return "[" + ",".join(f"{float(x):.6g}" for x in vector) + "]"
