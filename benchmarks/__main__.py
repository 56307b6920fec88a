"""`make bench`: every benchmark, each printing its numbers beside a baseline measured
in the same run."""

from benchmarks import (
    he_bench,
    psi,
    quantile_bench,
    regression_bench,
    stats_bench,
    train_bench,
)

he_bench.main()
stats_bench.main()
quantile_bench.main()
regression_bench.main()
psi.main()
train_bench.main()
