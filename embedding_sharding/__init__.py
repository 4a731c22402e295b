"""Sharding: topology, constraints, sharders, the planner, plan files and plan reports."""

DEFAULT_SEARCH_BUDGET_S = 10.0  # seconds for the planner's proposal search (embedding_sharding.search); light to import
