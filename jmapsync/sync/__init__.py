"""Deciding (plan.py, pure) and doing (engine.py)."""
