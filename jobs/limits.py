"""Resource limits of a job spec, in one place: the coordinator refuses a spec beyond any
of them at submission, and every node refuses it again before touching data.

Each limit is refused with one error that names it. A node's cost grows with the
number of row sets a job describes (each bin, group value and correlation pair is one, and
the query auditor keeps a row mask per set), so the numbers below keep one stats job to
a few hundred row sets. The limits of documents in general, of data files and of error
messages are in :mod:`scifed.limits`.

================================  =======  ==============================================
name                              value    what it bounds
================================  =======  ==============================================
``MAX_SPEC_BYTES``                64 KiB   the job.yaml text (UTF-8)
``MAX_SPEC_JSON_BYTES``           128 KiB  a spec that travels as JSON (a task, the
                                           coordinator's database): JSON spells numbers
                                           longer (``2500`` -> ``2500.0``)
``MAX_SPEC_DEPTH``                32       nested mappings / lists, checked before the YAML
                                           composer or pydantic recurse
``MAX_JOB_NODES``                 2048     nodes a job names (``he.MAX_SUMMANDS``: the BFV
                                           encoding is exact for sums of up to 2048)
``MAX_JOB_COLUMNS``               100      ``stats``: distinct columns over all sections
                                           together (also the columns ``dp.bounds`` may
                                           name)
``MAX_HISTOGRAM_EDGES``           200      ``stats``: bin edges of one histogram
``MAX_TOTAL_HISTOGRAM_EDGES``     500      ``stats``: bin edges of all histograms together
``MAX_GROUP_COLUMNS``             10       ``stats``: columns of ``group_counts``
``MAX_CORRELATION_COLUMNS``       20       ``stats``: columns of ``correlation`` (n(n+1)/2
                                           pairs, 210 at most)
``MAX_ROUND_THRESHOLDS``          1024     ``stats``: thresholds one counting round of the
                                           quantile search asks of one column, over all
                                           its probabilities (one ciphertext of counts)
``MAX_TOTAL_ROUND_THRESHOLDS``    8192     ``stats``: the same over all columns of the
                                           round; the release node plans within both, and
                                           a node refuses a larger round
================================  =======  ==============================================

The filter's own limits (2,000 characters, 32 levels) are in :mod:`scifed.filters`.
"""

from __future__ import annotations

from scifed.limits import KiB

MAX_SPEC_BYTES = 64 * KiB
MAX_SPEC_JSON_BYTES = 2 * MAX_SPEC_BYTES
MAX_SPEC_DEPTH = 32
MAX_JOB_NODES = 2048  # = scifed.he.MAX_SUMMANDS (not imported: spec parsing needs no SEAL)

MAX_JOB_COLUMNS = 100
MAX_HISTOGRAM_EDGES = 200
MAX_TOTAL_HISTOGRAM_EDGES = 500
MAX_GROUP_COLUMNS = 10
MAX_CORRELATION_COLUMNS = 20
MAX_ROUND_THRESHOLDS = 1024
MAX_TOTAL_ROUND_THRESHOLDS = 8192
