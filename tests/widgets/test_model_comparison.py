import pytest
import torch

from segnotes.metrics import confusion_matrix, segmentation_scores
from segnotes.viz import model_comparison_figure, perturb_mask
from segnotes.widgets import ModelComparison


def semantic_case():
    targets = []
    for index in range(4):
        target = torch.zeros(24, 24, dtype=torch.int64)
        target[4:16, 3 + index : 15 + index] = 1
        target[18:21, :] = 2  # a thin bar: what coarse predictions lose
        target[3, :] = 255
        targets.append(target)

    def coarse(target, factor):
        labels = torch.zeros_like(target)
        for label in (1, 2):
            labels[perturb_mask(target == label, coarsen=factor)] = label
        return labels

    images = [torch.rand(3, 24, 24) for _ in targets]
    return images, targets, [coarse(t, 8) for t in targets], [coarse(t, 2) for t in targets]


def test_semantic_scores_and_dataset_total():
    images, targets, coarse, fine = semantic_case()
    widget = ModelComparison(images, targets, coarse, fine, names=("stride 8", "stride 2"))
    for index, target in enumerate(targets):
        expected = segmentation_scores(confusion_matrix(fine[index], target, 3))["mean_iu"]
        assert widget.scores[1][index] == pytest.approx(expected)
    total = sum(confusion_matrix(p, t, 3) for p, t in zip(fine, targets))
    assert widget.result["totals"][1] == pytest.approx(segmentation_scores(total)["mean_iu"])
    assert all(b > a for a, b in zip(*widget.scores))  # the finer model is better on every image


def test_browsing_images_matches_the_figure():
    images, targets, coarse, fine = semantic_case()
    widget = ModelComparison(images, targets, coarse, fine)
    result = widget.update(image=2)
    assert result["index"] == 2 and result["scores"] == [widget.scores[0][2], widget.scores[1][2]]
    figure = model_comparison_figure(images, targets, coarse, fine, index=2)
    figure.canvas.draw()
    assert [ax.get_title() for ax in widget.figure.axes] == [ax.get_title() for ax in figure.axes]
    with pytest.raises(ValueError, match=r"ModelComparison.update: image must be in \[0, 3\], got 4"):
        widget.update(image=4)


def test_instance_mode_has_a_score_threshold():
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 2:9, 2:9] = True
    target = {"boxes": torch.tensor([[2.0, 2.0, 9.0, 9.0]]), "labels": torch.tensor([1]), "masks": masks}
    prediction = dict(target, scores=torch.tensor([0.4]))
    widget = ModelComparison([torch.rand(3, 16, 16)], [target], [prediction], [prediction])
    assert set(widget.controls) == {"image", "score_threshold"}
    assert widget.scores == [[pytest.approx(1.0)], [pytest.approx(1.0)]]
    widget.update(score_threshold=0.3)
    assert widget._plot._boxes[1].get_segments()  # the 0.4 detection is drawn at threshold 0.3 ...
    widget.update(score_threshold=0.5)
    assert not widget._plot._boxes[1].get_segments()  # ... and hidden at 0.5


def test_bad_input():
    images, targets, coarse, fine = semantic_case()
    with pytest.raises(ValueError, match=r"model_comparison_figure: targets must have one entry per image \(4\), got list of length 3"):
        ModelComparison(images, targets[:3], coarse, fine)
    with pytest.raises(TypeError, match=r"model_comparison_figure: names must be a pair of strings, got str 'AB'"):
        ModelComparison(images, targets, coarse, fine, names="AB")
