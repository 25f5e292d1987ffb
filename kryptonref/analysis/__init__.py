"""Analysis: the cost simulator (Algorithm 1 generalised) and its reports; localisation
metrics of occlusion heatmaps against ground-truth boxes; heatmap quality (SSIM) and
drill-down's predicted speedup."""
from .cost import LayerCost, SpeedupReport, speedup
from .localisation import cell_centres, centres_in_box, energy_in_box, pointing_game
from .quality import coarse_stride_for, drilldown_speedup, mean_absolute_error, ssim

__all__ = ["speedup", "SpeedupReport", "LayerCost", "pointing_game", "energy_in_box",
           "cell_centres", "centres_in_box", "ssim", "mean_absolute_error", "drilldown_speedup",
           "coarse_stride_for"]
