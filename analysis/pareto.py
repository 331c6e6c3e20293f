"""Study 6: cost against accuracy for the catalog of :func:`intsoftmax.select`, with the
Pareto front, and what ``select`` returns for a few targets.

Cost is ``Recipe.op_count().total`` (integer ops per score element); SQNR is measured
exactly as ``select`` measures it (:func:`intsoftmax.select.evaluate`: golden model, one
fixed-seed draw of the workload), and the selections are ``select``'s own decision
(:func:`intsoftmax.select.choose`) on those measurements.
"""
from __future__ import annotations

import dataclasses

from intsoftmax.select import Candidate, Selection, catalog, choose, evaluate, pareto_front

from .progress import quiet

WORKLOAD = "A2"
SEED = 0
#: SQNR targets asked of ``select`` per distribution: a few reachable ones and one that is not.
TARGETS_DB = {"uniform": (25.0, 30.0, 35.0, 37.0, 40.0), "gaussian": (25.0, 28.0, 30.0, 32.0),
              "outlier": (20.0, 23.0, 23.6, 25.0)}


@dataclasses.dataclass(frozen=True)
class ParetoPanel:
    distribution: str
    candidates: list[Candidate]
    front: list[Candidate]
    selections: dict  # target dB -> Selection, or the ValueError text when none meets it


@dataclasses.dataclass(frozen=True)
class ParetoStudy:
    workload: str
    seed: int
    panels: list[ParetoPanel]


def compute(quick: bool = False, progress=quiet) -> ParetoStudy:
    """A2, seed 0: the uniform distribution (quick) or all three (full)."""
    dists = ("uniform",) if quick else ("uniform", "gaussian", "outlier")
    recipes = catalog()
    panels = []
    with progress("pareto", len(dists)) as p:
        for dist in dists:
            cands = evaluate(recipes, WORKLOAD, dist, SEED)
            selections: dict[float, Selection | str] = {}
            for target in TARGETS_DB[dist]:
                try:
                    selections[target] = choose(cands, target, WORKLOAD, dist, SEED)
                except ValueError as err:
                    selections[target] = str(err)
            panels.append(ParetoPanel(dist, cands, pareto_front(cands), selections))
            p.step()
    return ParetoStudy(WORKLOAD, SEED, panels)


def markdown(study: ParetoStudy) -> str:
    parts = []
    for panel in study.panels:
        front = ["| ops / element | recipe | SQNR (dB) |", "|---:|---|---:|"]
        front += [f"| {c.ops} | `{c.label}` | {c.sqnr_db:.2f} |" for c in panel.front]
        sel = ["| target (dB) | `select` returns | ops / element | SQNR (dB) |", "|---:|---|---:|---:|"]
        for target, s in panel.selections.items():
            if isinstance(s, str):
                sel.append(f"| {target:g} | `ValueError`: {s} | | |")
            else:
                sel.append(f"| {target:g} | `{s.label}` | {s.ops_per_element} | {s.sqnr_db:.2f} |")
        parts.append(f"**{study.workload}, {panel.distribution}**: Pareto front of {len(panel.candidates)} recipes\n\n"
                     + "\n".join(front) + f"\n\n`select(target, workload=\"{study.workload}\", "
                     f"distribution=\"{panel.distribution}\")`:\n\n" + "\n".join(sel))
    return "\n\n".join(parts)
