"""Analysis: the cost simulator (Algorithm 1 generalised) and its reports."""
from .cost import LayerCost, SpeedupReport, speedup

__all__ = ["speedup", "SpeedupReport", "LayerCost"]
