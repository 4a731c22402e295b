"""TorchRec's shard performance estimator, computed once per distinct shard size of an option.

TorchRec's `EmbeddingPerfEstimator` builds a perf context and runs the perf model for every shard of every
sharding option. A row-wise or data-parallel option on W ranks has W shards, mostly of one size, whose contexts
depend only on (rows, cols) and the option (`ShardPerfContext._build_contexts`), so their estimates are identical.
This subclass evaluates each distinct size once and copies the result: the same numbers, ~W times less work
(planning 351 tables for 128 GPUs otherwise spends minutes here).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Dict, List, Optional, Tuple

from torchrec.distributed.planner.constants import DEFAULT_PERF_ESTIMATOR
from torchrec.distributed.planner.estimator.estimator import (
    EmbeddingPerfEstimator,
    EmbeddingPerfEstimatorFactory,
    get_embedding_perf_sharding_evaluator,
)
from torchrec.distributed.planner.estimator.types import ShardPerfContext
from torchrec.distributed.planner.types import (
    ParameterConstraints,
    Perf,
    SharderDataMap,
    ShardingOption,
    Topology,
)


class DedupPerfEstimator(EmbeddingPerfEstimator):
    """EmbeddingPerfEstimator (TorchRec's default hardware config) with one evaluation per distinct shard size."""

    def __init__(self, topology: Topology, constraints: Optional[Dict[str, ParameterConstraints]] = None) -> None:
        default = EmbeddingPerfEstimatorFactory.create(DEFAULT_PERF_ESTIMATOR, topology=topology,
                                                       constraints=constraints)
        super().__init__(topology=topology, constraints=constraints, config=default.config)

    def estimate(self, sharding_options: List[ShardingOption], sharder_data_map: SharderDataMap) -> None:
        for so in sharding_options:
            self._config.validate_sharding_type(so.sharding_type)
            sizes = [list(s.size) for s in so.shards]
            distinct: List[List[int]] = []
            index: Dict[Tuple[int, ...], int] = {}
            for size in sizes:
                if tuple(size) not in index:
                    index[tuple(size)] = len(distinct)
                    distinct.append(size)
            contexts = ShardPerfContext.build_shard_perf_contexts(
                config=self._config, shard_sizes=distinct, sharding_option=so, topology=self._topology,
                constraints=self._constraints, sharder_data=sharder_data_map[so.module_type_key],
                is_inference=self._is_inference,
                use_batch_inputs_for_expected_cache_fetches=self._use_batch_inputs_for_expected_cache_fetches,
                use_linear_regression_prefetch_estimate=self._use_linear_regression_prefetch_estimate,
            )
            if contexts:
                so.is_weighted = contexts[0].is_weighted
            perfs: List[Perf] = []
            for ctx in contexts:
                evaluator = get_embedding_perf_sharding_evaluator(sharding_type=ctx.sharding_type,
                                                                  is_inference=ctx.is_inference)
                perfs.append(evaluator.compute_perf(ctx=ctx, config=self._config))
            shard_perfs = [copy.copy(perfs[index[tuple(size)]]) for size in sizes]
            shard_perfs = self._config.post_process_perfs(
                shard_perfs=shard_perfs, shard_sizes=sizes, sharding_type=so.sharding_type,
                uneven_sharding_perf_multiplier=self._topology.uneven_sharding_perf_multiplier)
            for shard, perf in zip(so.shards, shard_perfs):
                shard.perf = perf


def _option_key(so: ShardingOption, constraints: Optional[Dict[str, ParameterConstraints]]) -> Tuple:
    """Everything TorchRec's perf and storage estimators read from an option, except the table's name."""
    pc = (constraints or {}).get(so.name)
    return (so.path, so.module_type_key, so.sharding_type, so.compute_kernel, tuple(so.tensor.shape),
            so.tensor.dtype, tuple(so.input_lengths), so.batch_size, so.is_pooled, repr(so.cache_params),
            so.enforce_hbm, so.stochastic_rounding, so.bounds_check_mode, so.output_dtype, repr(so.key_value_params),
            tuple((tuple(s.size), tuple(s.offset)) for s in so.shards),
            repr(dataclasses.replace(pc, feature_names=None)) if pc is not None else None)


def _clone(x: Any) -> Any:
    """copy.copy of a plain dataclass (Perf, Storage) without copy's protocol lookups: ~5x faster, and the
    estimates of 351 tables x 128 ranks are ~500k of them."""
    if x is None:
        return None
    new = object.__new__(type(x))
    new.__dict__.update(x.__dict__)
    return new


class SharedShapeEstimates:
    """Runs `estimators` once per class of interchangeable options and copies the results to the rest.

    OptInter's 325 cross tables mostly have one shape (rows capped at the same size), so their options are
    identical but for the table name: the estimates (per-shard perf and storage) are too. Same numbers as running
    every estimator on every option (tests/test_plan_search.py), ~tables / shapes times less work.
    """

    def __init__(self, estimators: List, constraints: Optional[Dict[str, ParameterConstraints]] = None) -> None:
        self.estimators = estimators
        self.constraints = constraints

    def estimate(self, sharding_options: List[ShardingOption], sharder_data_map: SharderDataMap) -> None:
        first: Dict[Tuple, ShardingOption] = {}
        copies: List[Tuple[ShardingOption, ShardingOption]] = []
        for so in sharding_options:
            key = _option_key(so, self.constraints)
            if key in first:
                copies.append((so, first[key]))
            else:
                first[key] = so
        for est in self.estimators:
            est.estimate(list(first.values()), sharder_data_map=sharder_data_map)
        for so, src in copies:
            so.is_weighted = src.is_weighted
            for shard, from_shard in zip(so.shards, src.shards):
                shard.perf = _clone(from_shard.perf)
                shard.storage = _clone(from_shard.storage)
