"""Run a function on N gloo ranks in fresh processes and collect what each rank returns.

    results = run_on_ranks(fn, world_size=2, args=(x,))   # fn(rank, world_size, *args) -> picklable

The spawner is the library's own (launch/local_ranks.py), shared with the benchmarks.
"""

from launch.local_ranks import free_port, run_on_ranks  # noqa: F401
