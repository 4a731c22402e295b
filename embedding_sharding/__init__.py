"""Sharding: topology, constraints, sharders, the planner, plan files and plan reports."""
