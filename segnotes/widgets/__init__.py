"""Interactive figures for the book (ipywidgets): each redraws a matplotlib Figure in a few milliseconds.

Each widget class has a plain function under it in :mod:`segnotes.viz` that draws the same picture without
the widget, for the static HTML book and for tests: :class:`MaskComparison` -> ``mask_comparison_figure``,
:class:`APExplorer` -> ``pr_curve_figure`` and ``detections_figure``, :class:`ModelComparison` ->
``model_comparison_figure``.
"""
from .ap_explorer import APExplorer
from .demo import simulated_detections
from .mask_comparison import MaskComparison
from .model_comparison import ModelComparison

__all__ = ["MaskComparison", "APExplorer", "ModelComparison", "simulated_detections"]
