"""ModelComparison: two models' masks on the same images, image by image, with their score difference."""
from __future__ import annotations

from collections.abc import Sequence

import ipywidgets
import numpy as np

from ..viz.compare import _MODEL_COLORS, _ModelComparisonPlot, _rgba8
from ._base import FigureWidget
from ._static import mask_runs, png_base64

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

    _static_kind = "model-comparison"
    #: The page draws the pictures this many times larger, so that boxes fall between pixels.
    _static_scale = 2

    def _static_data(self) -> dict:
        # Semantic mode: every picture the widget can show, drawn here by the figure's own code (one per image and
        # panel); the page swaps them. Instance mode: the image and ground-truth panels likewise, but the models'
        # panels depend on the score threshold too, and one picture per set of detections it keeps came to ~9 MB
        # for sixteen images; so the page gets each detection's mask, box and score and blends the kept ones on
        # the image itself, as segnotes.viz.overlay_instances does. Bars and scores are drawn from the numbers.
        plot = self._plot
        frames: list[dict] = []

        def frame(rgb, segments, colors) -> int:
            boxes = [[*segment[0], *segment[2], *_rgba8(np.asarray([[color]], dtype=np.float32))[0, 0, :3].tolist()]
                     for segment, color in zip(segments, colors)]
            frames.append({"png": png_base64(_rgba8(rgb)[..., :3]), "boxes": boxes})
            return len(frames) - 1

        images = []
        for index in range(len(plot.images)):
            if plot.mode == "semantic":
                images.append({"panels": [frame(*picture) for picture in plot.pictures(index, 0.0)]})
                continue
            image_panel, truth_panel = (frame(*picture) for picture in plot.pictures(index, 0.0)[:2])
            models = []
            for predictions in plot.predictions:
                instances = predictions[index]
                masks = instances["masks"]
                masks = (masks[:, 0] > 0.5 if masks.ndim == 4 else masks).bool()  # as _instance_rgb
                models.append([
                    {"score": score, "box": box, "mask": mask_runs(mask)}
                    for score, box, mask in zip(instances["scores"].detach().cpu().tolist(),
                                                instances["boxes"].detach().cpu().tolist(), masks.detach().cpu())
                ])
            images.append({"panels": [image_panel, truth_panel], "detections": models})
        titles = [ax.title.get_text() for ax in (panel.axes for panel in plot._panels)]
        return {
            "mode": plot.mode,
            "names": list(plot.names),
            "score_name": plot.score_name,
            "titles": titles,
            "model_panels": [1, 2] if plot.mode == "semantic" else [2, 3],
            "scores": plot.scores,
            "totals": plot.totals,
            "overlay_alpha": 0.55,  # segnotes.viz.overlay_instances' default
            "colors": [_rgba8(np.asarray([[c]], dtype=np.float32))[0, 0, :3].tolist() for c in _MODEL_COLORS],
            "box_scale": self._static_scale,
            "frames": frames,
            "images": images,
        }
