"""The proposal search under a time budget: TorchRec's proposers, each given a share of the budget, with progress.

TorchRec's planner tries every proposal its proposers make (partition, then rate by the slowest rank's estimated
step time) and keeps the best. Its greedy proposers walk through every option of every table, one partition per
step: for 351 tables on 128 ranks that is ~5000 partitions, many minutes. Its own `timeout_seconds` is one
deadline for all proposers in turn, so the first one can use it all.

Here each proposer is wrapped (`BudgetedProposer`): when proposer i of n starts at time t it may run until
t + (deadline - t) / (n - i), i.e. an equal share of what is left, and a proposer that finishes early leaves its
time to the next. Order: grid search (TorchRec skips it above 10,000 proposals, i.e. for more than a few
tables), greedy by the slowest shard (its first proposal is every table's fastest option: usually the best
plan when it fits), uniform (one proposal per sharding type), greedy by the summed shards.
`SearchLog` records what every proposer did, logs progress (logger "embedding_sharding.search", every
`interval_s`), and says whether the search stopped early and how far each proposer got.

    search = SearchLog(budget_s=10)
    planner = EmbeddingShardingPlanner(..., proposer=search.proposers())
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from torchrec.distributed.planner.proposers import GreedyProposer, GridSearchProposer, UniformProposer
from torchrec.distributed.planner.types import Enumerator, Proposer, ShardingOption, Topology

from embedding_sharding import DEFAULT_SEARCH_BUDGET_S as DEFAULT_BUDGET_S  # the search alone, not enumeration

log = logging.getLogger("embedding_sharding.search")


class _Stderr(logging.StreamHandler):
    """A handler writing to whatever sys.stderr is when a line is logged (test captures replace it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def show_progress() -> None:
    """Print the search's progress lines (enumeration, every 2 s, how it ended) on stderr."""
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def default_proposers() -> List[Proposer]:
    return [GridSearchProposer(), GreedyProposer(), UniformProposer(), GreedyProposer(use_depth=False)]


def proposal_bound(proposer: Proposer) -> Optional[int]:
    """How many proposals a loaded TorchRec proposer can make at most (None: unknown proposer type)."""
    if isinstance(proposer, GreedyProposer):
        return 1 + sum(len(o) - 1 for o in proposer._sharding_options_by_fqn.values())
    if isinstance(proposer, UniformProposer):
        return len(proposer._grouped_sharding_options)
    if isinstance(proposer, GridSearchProposer):
        return len(proposer._proposals)
    return None


def proposer_name(proposer: Proposer) -> str:
    name = type(proposer).__name__
    if isinstance(proposer, GreedyProposer) and not proposer._use_depth:
        name += "(sum)"
    return name


@dataclass
class ProposerRun:
    name: str
    bound: Optional[int] = None  # most proposals it could make
    proposals: int = 0  # tried (partitioned, or answered from the planner's cache)
    fits: int = 0  # of which partitionable
    best_ms: Optional[float] = None
    seconds: float = 0.0
    finished: bool = False  # made every proposal it had (False: cut by the budget, or not reached)


@dataclass
class SearchLog:
    """Budget, progress and the record of the search. `budget_s=None`: no budget (TorchRec's full search)."""

    budget_s: Optional[float] = DEFAULT_BUDGET_S
    interval_s: float = 2.0
    runs: List[ProposerRun] = field(default_factory=list)
    start: Optional[float] = None
    end: Optional[float] = None
    best_ms: Optional[float] = None
    enumerate_s: float = 0.0
    options: int = 0
    _last_log: float = 0.0

    def proposers(self, inner: Optional[List[Proposer]] = None) -> List[Proposer]:
        inner = inner if inner is not None else default_proposers()
        self.runs = [ProposerRun(proposer_name(p)) for p in inner]
        return [BudgetedProposer(p, self, i) for i, p in enumerate(inner)]

    # -- called by the proposers ---------------------------------------------------------------------------
    def loaded(self, search_space: List[ShardingOption]) -> None:
        if self.start is None:
            self.start = self._last_log = time.perf_counter()
            self.options = len(search_space)
            tables = len({o.fqn for o in search_space})
            budget = f"{self.budget_s:g} s budget" if self.budget_s else "no budget"
            log.info("plan search: %d sharding options of %d tables, %s", self.options, tables, budget)

    def deadline(self, index: int, now: float) -> Optional[float]:
        """Until when proposer `index` may run when it starts at `now`: an equal share of the time left."""
        if not self.budget_s or self.start is None:
            return None
        left = self.start + self.budget_s - now
        return now + max(0.0, left) / (len(self.runs) - index)

    def tried(self, index: int, fits: bool, rating: Optional[float]) -> None:
        run = self.runs[index]
        run.proposals += 1
        if fits and rating is not None:
            run.fits += 1
            run.best_ms = rating if run.best_ms is None else min(run.best_ms, rating)
            self.best_ms = rating if self.best_ms is None else min(self.best_ms, rating)
        now = time.perf_counter()
        if now - self._last_log >= self.interval_s:
            self._last_log = now
            log.info("plan search: %s", self.progress_line(now))

    def done(self) -> None:
        if self.end is not None:
            return
        self.end = time.perf_counter()
        log.info("plan search: %s", self.summary())

    # -- reading --------------------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        if self.start is None:
            return 0.0
        return (self.end or time.perf_counter()) - self.start

    @property
    def stopped_early(self) -> bool:
        return any(not r.finished for r in self.runs)

    def progress_line(self, now: Optional[float] = None) -> str:
        elapsed = (now or time.perf_counter()) - (self.start or 0.0)
        tried = sum(r.proposals for r in self.runs)
        fits = sum(r.fits for r in self.runs)
        current = next((r for r in reversed(self.runs) if r.proposals), None)
        where = f", {current.name} at {current.proposals}/{current.bound or '?'}" if current else ""
        best = f"best {self.best_ms:.3f} ms/step" if self.best_ms is not None else "no plan that fits yet"
        budget = f" of {self.budget_s:g}" if self.budget_s else ""
        return f"{elapsed:.1f}{budget} s, {tried} proposals tried ({fits} fit), {best}{where}"

    def summary(self) -> str:
        parts = [f"{r.name} {r.proposals}/{r.bound if r.bound is not None else '?'}"
                 + ("" if r.finished else " (cut)") for r in self.runs]
        how = (f"stopped early at the {self.budget_s:g} s budget" if self.stopped_early
               else "searched every proposal")
        best = f"{self.best_ms:.3f} ms/step" if self.best_ms is not None else "none"
        return (f"{how} after {self.seconds:.1f} s; best plan: slowest rank {best}; proposals tried / possible: "
                + ", ".join(parts))

    def to_dict(self) -> Dict[str, Any]:
        return {"budget_s": self.budget_s, "seconds": self.seconds, "stopped_early": self.stopped_early,
                "enumerate_s": self.enumerate_s, "options": self.options, "best_ms": self.best_ms,
                "summary": self.summary(),
                "proposers": [vars(r).copy() for r in self.runs]}


class BudgetedProposer(Proposer):
    """A TorchRec proposer that stops proposing at its share of the budget and reports what it tried."""

    def __init__(self, inner: Proposer, search: SearchLog, index: int) -> None:
        self.inner, self.search, self.index = inner, search, index
        self._deadline: Optional[float] = None
        self._started: Optional[float] = None

    def load(self, search_space: List[ShardingOption], enumerator: Optional[Enumerator] = None) -> None:
        self.search.loaded(search_space)
        self.inner.load(search_space=search_space, enumerator=enumerator)
        self.search.runs[self.index].bound = proposal_bound(self.inner)

    def propose(self) -> Optional[List[ShardingOption]]:
        now = time.perf_counter()
        run = self.search.runs[self.index]
        if self._started is None:  # the planner asks for the first proposal when this proposer's turn comes
            self._started = now
            self._deadline = self.search.deadline(self.index, now)
        if self._deadline is not None and now > self._deadline:
            run.seconds = now - self._started
            if self.index == len(self.search.runs) - 1:
                self.search.done()
            return None
        proposal = self.inner.propose()
        run.seconds = now - self._started
        if proposal is None:
            run.finished = True
            if self.index == len(self.search.runs) - 1:
                self.search.done()
        return proposal

    def feedback(self, partitionable: bool, plan: Optional[List[ShardingOption]] = None,
                 perf_rating: Optional[float] = None, storage_constraint: Optional[Topology] = None) -> None:
        self.search.tried(self.index, partitionable, perf_rating)
        self.inner.feedback(partitionable=partitionable, plan=plan, perf_rating=perf_rating,
                            storage_constraint=storage_constraint)
