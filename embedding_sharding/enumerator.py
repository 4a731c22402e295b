"""TorchRec's EmbeddingEnumerator without the deep copy it keeps of every search space it returns.

`EmbeddingEnumerator.enumerate` stores `copy.deepcopy(options)` to answer a repeated call with the same module.
For 351 tables on 128 ranks that copy is ~700k shards and took longer than the rest of the enumeration; the
planner calls enumerate once. Here the stored list holds the same option objects (a repeated call, as fit.py
makes after a failed plan, reads them and gets a new list of them).
"""

from __future__ import annotations

import copy as _copy
import logging
import time
from typing import Any, List, Optional
from unittest import mock

from torch import nn
from torchrec.distributed.planner import enumerators
from torchrec.distributed.planner.enumerators import EmbeddingEnumerator
from torchrec.distributed.planner.types import ShardingOption
from torchrec.distributed.types import ModuleSharder

log = logging.getLogger("embedding_sharding.search")


class _ShallowListCopy:
    """Stands in for the `copy` module inside enumerators.py: lists of options are copied shallowly."""

    @staticmethod
    def deepcopy(x: Any, memo: Optional[dict] = None) -> Any:
        if isinstance(x, list) and all(isinstance(o, ShardingOption) for o in x):
            return list(x)
        return _copy.deepcopy(x, memo)


class SearchSpaceEnumerator(EmbeddingEnumerator):
    """EmbeddingEnumerator whose cached search space is a shallow copy (same options, same estimates); logs
    how long the enumeration took (`seconds`)."""

    seconds: float = 0.0

    def enumerate(self, module: nn.Module, sharders: List[ModuleSharder[nn.Module]]) -> List[ShardingOption]:
        log.info("plan: enumerating sharding options on %d ranks", self._world_size)
        start = time.perf_counter()
        with mock.patch.object(enumerators, "copy", _ShallowListCopy):
            options = super().enumerate(module, sharders)
        self.seconds = time.perf_counter() - start
        log.info("plan: %d sharding options enumerated in %.1f s", len(options), self.seconds)
        return options
