"""Resource limits shared by node, coordinator and client: one table, one name per number.

Every input a person or a peer hands scifed is bounded *before* the expensive step (the
YAML composer, pydantic, DuckDB), so an oversized or deeply nested input costs bounded
time and memory and is refused with one error that names the limit. The limits of a job
spec's own content (bins, columns, nodes) live in :mod:`jobs.limits`, beside the job
types (``scifed`` must not import ``jobs``, see ``tests/unit/test_layers.py``).

Error messages
    ``EXCERPT_CHARS``: the most characters of any one input value an error message quotes
    (:func:`scifed.errors.excerpt`). ``MAX_MESSAGE_CHARS``: the most characters of a whole
    message listing several problems (:func:`scifed.errors.join_problems`); the rest are
    counted, not listed. A gRPC status message travels in a header, and peers refuse
    headers above 16 KiB.

YAML / JSON documents (configs, policy overrides, dataset metadata; job specs use the
tighter numbers of :mod:`jobs.limits`)
    ``MAX_DOCUMENT_BYTES`` of UTF-8 text, nested at most ``MAX_DOCUMENT_DEPTH`` mappings or
    lists deep, with at most ``MAX_DOCUMENT_VALUES`` values once YAML aliases are expanded
    (a "billion laughs" document is small as text and huge as data). Depth is checked on
    the parser's event stream, before the recursive composer runs.

Data files at registration (``node/profiling.py:check_file``), read from the header only
    ``MAX_FILE_BYTES``, ``MAX_FILE_COLUMNS`` (Parquet: leaf columns, nested fields
    included), a CSV/TSV header row of at most ``MAX_HEADER_BYTES``, and a Parquet footer
    of at most ``MAX_PARQUET_FOOTER_BYTES``.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

EXCERPT_CHARS = 200
MAX_MESSAGE_CHARS = 1000

MAX_DOCUMENT_BYTES = 1 * MiB
MAX_DOCUMENT_DEPTH = 32
MAX_DOCUMENT_VALUES = 100_000

MAX_FILE_BYTES = 2 * GiB
MAX_FILE_COLUMNS = 1000
MAX_HEADER_BYTES = 1 * MiB
MAX_PARQUET_FOOTER_BYTES = 64 * MiB
