"""MaskComparison: damage a prediction with sliders and watch IoU, pixel accuracy and mean IU react."""
from __future__ import annotations

import ipywidgets
import numpy as np
from torch import Tensor

from ..viz.compare import _MASK_COLOR, OUTCOME_COLORS, _check_pair, _MaskComparisonPlot, _rgba8, perturb_mask
from ._base import FigureWidget
from ._static import mask_runs, png_base64

__all__ = ["MaskComparison"]

COARSEN_FACTORS = (1, 2, 4, 8, 16, 32)


class MaskComparison(FigureWidget):
    """Ground truth against a perturbed prediction, with the metrics updated as the sliders move.

    The sliders feed :func:`segnotes.viz.perturb_mask`: shift (dy, dx), dilate (negative erodes), coarsen
    (output stride 1 to 32, then bilinear or nearest upsampling: FCN-32s is ``coarsen=32``). The picture is
    :func:`segnotes.viz.mask_comparison_figure`'s.

    Args:
        target (BoolTensor[H, W]): ground-truth mask.
        prediction (BoolTensor[H, W], optional): the prediction to perturb (default: the ground truth itself,
            a perfect prediction).
        image (FloatTensor[3, H, W] in [0, 1], optional): drawn under the masks.
        ignore (BoolTensor[H, W], optional): void pixels, left out of the metrics.
        max_shift: range of the shift sliders, in pixels.
        max_dilate: range of the dilate slider, in pixels.
        size: inches per panel.

    Example:
        >>> MaskComparison(labels == 3, image=image, ignore=labels == 255)  # displays in a notebook
        >>> MaskComparison(mask).update(coarsen=32)["iou"]  # headless, e.g. in tests
    """

    def __init__(
        self,
        target: Tensor,
        prediction: Tensor | None = None,
        image=None,
        ignore: Tensor | None = None,
        max_shift: int = 16,
        max_dilate: int = 8,
        size: float = 2.3,
    ):
        prediction = target if prediction is None else prediction
        _check_pair("MaskComparison", prediction, target, ignore)
        self.prediction = prediction
        self._plot = _MaskComparisonPlot(target, image=image, ignore=ignore, size=size)
        self.figure = self._plot.figure
        slider = dict(continuous_update=True, style={"description_width": "initial"},
                      layout=ipywidgets.Layout(width="260px"))
        self.controls = {
            "shift_y": ipywidgets.IntSlider(0, -max_shift, max_shift, description="shift down", **slider),
            "shift_x": ipywidgets.IntSlider(0, -max_shift, max_shift, description="shift right", **slider),
            "dilate": ipywidgets.IntSlider(0, -max_dilate, max_dilate, description="dilate (−: erode)", **slider),
            "coarsen": ipywidgets.SelectionSlider(options=COARSEN_FACTORS, value=1, description="output stride",
                                                  **slider),
            "upsample": ipywidgets.ToggleButtons(options=["bilinear", "nearest"], value="bilinear",
                                                 description="upsample", style={"button_width": "70px"}),
        }
        self._start(rows=[["shift_y", "shift_x", "dilate"], ["coarsen", "upsample"]])

    def _draw(self, shift_y: int, shift_x: int, dilate: int, coarsen: int, upsample: str) -> dict:
        predicted = perturb_mask(self.prediction, shift=(shift_y, shift_x), dilate=dilate, coarsen=coarsen,
                                 upsample=upsample)
        parts = [f"shift ({shift_y}, {shift_x})" if shift_y or shift_x else "",
                 f"dilate {dilate}" if dilate else "", f"stride {coarsen} ({upsample})" if coarsen > 1 else ""]
        title = ", ".join(p for p in parts if p) or "prediction"
        return self._plot.draw(predicted, title)

    def _animated(self):
        return self._plot.animated()

    _static_kind = "mask-comparison"

    def _static_data(self) -> dict:
        # The page recomputes perturb_mask and the metrics itself (segnotes-widgets.js): four sliders and a toggle
        # make far too many combinations to draw ahead. It gets the masks, the dimmed image and the colours as
        # the figure rounds them to bytes, so its panels are the figure's pixel for pixel.
        plot = self._plot
        height, width = plot.target.shape
        colors = {"mask": _MASK_COLOR, **OUTCOME_COLORS}
        return {
            "height": int(height),
            "width": int(width),
            "base": png_base64(_rgba8(plot._base)[..., :3]),
            "target": mask_runs(plot.target),
            "prediction": mask_runs(self.prediction),
            "ignore": None if plot.ignore is None else mask_runs(plot.ignore),
            "colors": {name: _rgba8(np.asarray([[color]], dtype=np.float32))[0, 0, :3].tolist()
                       for name, color in colors.items()},
        }
