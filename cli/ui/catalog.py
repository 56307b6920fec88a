"""Catalog search with facets, from the coordinator's SearchCatalog answers.

The words of the query narrow the catalog first; the facets (grade, sharing category,
node, quality grade, keyword) then go to the coordinator as the same filters `scifed
catalog search` sends (``--grade``, ``--category``, ``--platform``, ``--min-quality``…), so
the console and the command line find the same records. The counts beside each facet
value are over the records that match the words, so choosing one value leaves the
others' counts visible. The job-type facet is read from each hit's grade and category:
the job types the default policy of that cell admits (a node may tighten it, never
loosen it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from jobs.registry import cell_access
from scifed.grading import CELL_DEFAULTS, Access

GRADES = ("G1", "G2", "G3", "G4", "G5", "G6")
CATEGORIES = ("OPEN", "CONDITIONAL", "CLOSED")
QUALITY = ("A", "B", "C", "D")
LIMIT = 500


@dataclass
class Selection:
    """What the researcher chose: the words, and values per facet (OR within one)."""

    query: str = ""
    grade: list[str] = field(default_factory=list)
    category: list[str] = field(default_factory=list)
    node: list[str] = field(default_factory=list)
    quality: list[str] = field(default_factory=list)
    job_type: list[str] = field(default_factory=list)
    keyword: str = ""

    def any(self) -> bool:
        return bool(self.grade or self.category or self.node or self.quality
                    or self.job_type or self.keyword)


def admitted(grade: str, category: str) -> dict[str, Access]:
    """Job types the default cell of (grade, category) admits, automatically or after
    approval (nothing for a pair outside the matrix)."""
    cell = CELL_DEFAULTS.get((grade, category))
    if cell is None:
        return {}
    return {j: a for j, a in cell_access(cell).items() if a != Access.FORBIDDEN}


@dataclass
class Facet:
    name: str                      # the query parameter
    values: list[tuple[str, int]]  # value, records matching the words with it
    chosen: list[str]

    @property
    def label_key(self) -> str:
        """The facet's heading in the interface text (cli/ui/messages.py)."""
        return f"ui.facet.{self.name}"


def search(client, sel: Selection) -> tuple[list[dict], list[Facet]]:
    """The hits for the selection (rows of `catalog search`, missing values None), and
    the facets with their counts."""
    words = client.search(sel.query, limit=LIMIT)
    quality = [q for q in QUALITY if q in sel.quality]
    hits = client.search(sel.query, grades=sel.grade, categories=sel.category,
                         platforms=sel.node, keywords=[sel.keyword] if sel.keyword else (),
                         limit=LIMIT)
    if quality:  # OR within the facet: any of the chosen grades
        hits = hits[hits.quality.isin(quality)]
    if sel.job_type:
        hits = hits[[any(j in admitted(g, c) for j in sel.job_type)
                     for g, c in zip(hits.grade, hits.category, strict=True)]]
    jobs = Counter(j for g, c in zip(words.grade, words.category, strict=True)
                   for j in admitted(g, c))
    facets = [
        _facet("grade", words.grade, GRADES, sel.grade),
        _facet("category", words.category, CATEGORIES, sel.category),
        _facet("node", words.node, sorted(set(words.node)), sel.node),
        _facet("quality", words.quality.dropna(), QUALITY, sel.quality),
        Facet("job_type", [(j, jobs[j]) for j in sorted(jobs)], sel.job_type),
    ]
    return hits.astype(object).where(hits.notna(), None).to_dict("records"), facets


def _facet(name: str, column, order, chosen: list[str]) -> Facet:
    counts = Counter(column)
    return Facet(name, [(v, counts[v]) for v in order if counts[v] or v in chosen], chosen)
