"""v4s_agent.envs"""
