"""ModelComparison: two models' masks on the same images, image by image, with their score difference."""
from __future__ import annotations

from collections.abc import Sequence

import ipywidgets

from ..viz.compare import _ModelComparisonPlot
from ._base import FigureWidget

__all__ = ["ModelComparison"]


class ModelComparison(FigureWidget):
    """Browse two models' predictions on the same images; the picture is :func:`segnotes.viz.model_comparison_figure`'s.

    Semantic mode (label maps) shows ground truth, both models and where only one is right, with each image's
    mean IU; instance mode (torchvision target dicts and model outputs) shows image, ground truth and both
    models' detections above a score threshold (a slider), with each image's mask AP. Below, one bar per
    image: B's score minus A's. Later chapters use it for FCN-32s vs FCN-8s, RoIPool vs RoIAlign and
    class-agnostic vs transferred masks.

    Args:
        images, targets, predictions_a, predictions_b, names, scores, score_name, num_classes, ignore_index,
        score_threshold, size: as :func:`segnotes.viz.model_comparison_figure`.
    """

    def __init__(
        self,
        images: Sequence,
        targets: Sequence,
        predictions_a: Sequence,
        predictions_b: Sequence,
        names: tuple[str, str] = ("A", "B"),
        scores=None,
        score_name: str | None = None,
        num_classes: int | None = None,
        ignore_index: int = 255,
        score_threshold: float = 0.5,
        size: float = 2.3,
    ):
        self._plot = _ModelComparisonPlot(
            images, targets, predictions_a, predictions_b, names=names, scores=scores, score_name=score_name,
            num_classes=num_classes, ignore_index=ignore_index, score_threshold=score_threshold, size=size,
        )
        self.figure = self._plot.figure
        self.scores = self._plot.scores
        self.controls = {
            "image": ipywidgets.IntSlider(0, 0, len(images) - 1, description="image", continuous_update=True),
        }
        if self._plot.mode == "instance":
            self.controls["score_threshold"] = ipywidgets.FloatSlider(
                score_threshold, min=0.0, max=1.0, step=0.05, description="score ≥", continuous_update=True
            )
        self._start()

    def _draw(self, image: int, score_threshold: float | None = None) -> dict:
        return self._plot.draw(image, score_threshold)

    def _animated(self):
        return self._plot.animated()
