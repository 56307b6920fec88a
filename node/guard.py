"""The differencing guard (governance §2.5): refuse a query whose row set differs from
an earlier released one on the same data by fewer than k rows, since the difference of
the two answers would describe those few rows.

Row sets (``node.data.DataFile.row_mask``) are kept as compressed bitmaps over the file's
row order, per dataset version (sha256): a new file version starts a new history.
"""

from __future__ import annotations

import sqlite3
import zlib

import numpy as np

from scifed.errors import UserError
from scifed.wire import now_ms


def check_and_record(con: sqlite3.Connection, *, job_id: str, dataset_id: str, sha256: str,
                     mask: np.ndarray, k: int) -> None:
    """Inside the release transaction: refuse a differencing pair, else remember it."""
    packed = np.packbits(mask)
    for r in con.execute("SELECT job_id, rows, bitmap FROM query_history WHERE dataset_id=? "
                         "AND sha256=? AND job_id != ?", (dataset_id, sha256, job_id)):
        earlier = np.frombuffer(zlib.decompress(r["bitmap"]), dtype=np.uint8)
        if earlier.size != packed.size:
            continue
        differ = int(np.unpackbits(earlier ^ packed).sum())
        if 0 < differ < k:
            raise UserError(f"refused by the differencing guard: the rows this query selects "
                            f"differ by {differ} from those of released job {r['job_id']} "
                            f"(fewer than k={k}), so comparing the two answers would reveal "
                            "those rows")
    con.execute("INSERT OR IGNORE INTO query_history VALUES (?,?,?,?,?,?)",
                (job_id, dataset_id, sha256, int(mask.sum()),
                 zlib.compress(packed.tobytes()), now_ms()))
