"""pgvector SQL the apps share: how a vector is written as a literal, and read back.

One formatting for every writer and reader: 6 significant digits, more than a halfvec
(about 3) keeps, so a stored vector and a query vector round the same way.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def vector_literal(vector: Iterable[float]) -> str:
    """`vector` as pgvector's text form (`[0.1,0.2,…]`), for a `%s::halfvec(<dim>)` parameter."""
    return "[" + ",".join(f"{float(x):.6g}" for x in vector) + "]"


def halfvec_from_send(raw: bytes | memoryview) -> np.ndarray:
    """A `halfvec_send(vector)` value as a float32 array.

    halfvec_send is pgvector's binary form: int16 dim, int16 unused, big-endian halfs; read
    in bulk it is far cheaper than parsing the text form.
    """
    return np.frombuffer(bytes(raw)[4:], dtype=">f2").astype(np.float32)
