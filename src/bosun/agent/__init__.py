"""The bosun agent: pulls tasks from queues and reproduces them (code, environment, run)."""
