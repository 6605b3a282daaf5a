"""The Video4Spatial model: config, transformer, pipeline, loss, text encoder and red box.

Depends on nothing else of ``v4s_agent``: the agent, the training loop and the export build on it.
"""
