"""The agent: the planner (model + decoding), the receding-horizon agent and the inverse-dynamics model.

Builds on :mod:`v4s_agent.model` and the env's action and goal definitions; the evaluation builds on it.
"""
