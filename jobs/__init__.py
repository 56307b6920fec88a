"""What the federation can compute: one folder per job type behind one interface
(:mod:`jobs.base`), and the registry (:mod:`jobs.registry`) that the node, the
coordinator and the job-spec schema read. Adding a type is a folder and one line here.
"""

from jobs import registry
from jobs.crosstab import CrosstabJob
from jobs.pca import PcaJob
from jobs.psi import PsiJob
from jobs.quality import QualityJob
from jobs.regression import RegressionJob
from jobs.stats import StatsJob
from jobs.survival import SurvivalJob
from jobs.train import TrainJob

for _job in (StatsJob(), QualityJob(), TrainJob(), RegressionJob(), PcaJob(),
             CrosstabJob(), SurvivalJob(), PsiJob()):
    registry.register(_job)

__all__ = ["registry"]
