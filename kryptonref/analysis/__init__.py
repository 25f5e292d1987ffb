"""Analysis: the cost simulator (Algorithm 1 generalised) and its reports; localisation
metrics of occlusion heatmaps against ground-truth boxes."""
from .cost import LayerCost, SpeedupReport, speedup
from .localisation import cell_centres, centres_in_box, energy_in_box, pointing_game

__all__ = ["speedup", "SpeedupReport", "LayerCost", "pointing_game", "energy_in_box",
           "cell_centres", "centres_in_box"]
