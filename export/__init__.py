"""v4s_agent.export"""
