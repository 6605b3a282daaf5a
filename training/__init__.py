"""v4s_agent.training"""
