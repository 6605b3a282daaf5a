"""Evaluation: open/closed-loop evaluation, the rollout, the independent evaluator detector and metrics.

The end of the data flow: it may import every other part, and nothing imports it.
"""
