import itertools

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Annotation

from segnotes.data import CATEGORIES, GROUPS, HANDLE_IN_MASK
from segnotes.viz import (
    cosine_similarity_matrix,
    given_box_figure,
    handles_figure,
    weight_similarity_figure,
    weight_transfer_diagram,
)
from segnotes.viz.transfer import LEFT_OUT_COLOR, MASK_COLOR, _handle_examples, _pixel_outline

matplotlib.use("Agg")

NAMES = [c["name"] for c in CATEGORIES]


# ------------------------------------------------------------------------------------------ helpers


def test_pixel_outline_follows_pixel_edges():
    figure = Figure()
    ax = figure.subplots()
    mask = np.zeros((3, 4), bool)
    mask[1, 1] = True  # one pixel: its four edges, at +-0.5 around (1, 1)
    segments = {tuple(map(tuple, s)) for s in _pixel_outline(ax, mask, "y").get_segments()}
    assert segments == {((0.5, 0.5), (1.5, 0.5)), ((0.5, 1.5), (1.5, 1.5)),
                        ((0.5, 0.5), (0.5, 1.5)), ((1.5, 0.5), (1.5, 1.5))}
    mask[1, 2] = True  # two side by side: 2 + 2 horizontal edges, 2 vertical (the shared one is gone)
    assert len(_pixel_outline(ax, mask, "y").get_segments()) == 6
    mask[:] = True  # the whole image: its border, 2 * (3 + 4) edges
    assert len(_pixel_outline(ax, mask, "y").get_segments()) == 14
    plt.close(figure)


# ----------------------------------------------------------------------------------- handles_figure


def test_handle_examples_are_clear_and_deterministic():
    examples = _handle_examples(0, "val", 128)
    assert [e["category_id"] for e in examples] == [c["id"] for c in CATEGORIES]
    for example in examples:
        assert example["handle"].sum() >= 6 and example["owned"].sum() >= 150
        assert not (example["handle"] & ~example["owned"]).any()
        # cropped to the box plus 3 px: the owned pixels start 3 px in, unless the box touches the border
        rows = np.flatnonzero(example["owned"].any(axis=1))
        assert rows[0] in (0, 1, 2, 3) and example["image"].shape[:2] == example["owned"].shape
    again = _handle_examples(0, "val", 128)
    assert all(a["index"] == b["index"] and a["k"] == b["k"] and np.array_equal(a["image"], b["image"])
               for a, b in zip(examples, again))
    with pytest.raises(RuntimeError, match=r"handles_figure: no clear instance of .*square.* in the first 1 val"):
        _handle_examples(0, "val", 128, max_images=1)


def test_handles_figure_shows_the_rule_of_each_category():
    figure = handles_figure()
    assert isinstance(figure, Figure) and len(figure.axes) == 18
    top, bottom = figure.axes[:9], figure.axes[9:]
    assert [ax.get_title() for ax in top] == [f"{c['name']} ({c['group']})" for c in CATEGORIES]
    rules = ["handle in mask" if HANDLE_IN_MASK[c["id"]] else "handle not in mask" for c in CATEGORIES]
    assert [ax.get_title() for ax in bottom] == rules
    # the handle's pixels are painted green (in the mask) or red (left out), as the rule says
    for category, example, ax in zip(CATEGORIES, _handle_examples(0, "val", 128), bottom):
        rgb = ax.images[0].get_array()[..., :3].astype(float)  # uint8 RGBA
        handle = rgb[example["handle"]].mean(axis=0)
        color = MASK_COLOR if HANDLE_IN_MASK[category["id"]] else LEFT_OUT_COLOR
        assert np.argmax(handle) == np.argmax(color), category["name"]
    figure.canvas.draw()
    plt.close(figure)


def test_handles_figure_of_the_attributes_variant_follows_the_outline_rule():
    from segnotes.data import ATTRIBUTE_CATEGORIES, ATTRIBUTE_GROUPS, ATTRIBUTE_HANDLE_IN_MASK

    group_b = ATTRIBUTE_GROUPS["B"]
    figure = handles_figure(attributes=True, categories=group_b, size=1.0)
    assert len(figure.axes) == 2 * len(group_b)
    top, bottom = figure.axes[: len(group_b)], figure.axes[len(group_b):]
    shown = [c for c in ATTRIBUTE_CATEGORIES if c["id"] in group_b]
    assert [ax.get_title() for ax in top] == [f"{c['colour']} {c['texture']}\n{c['outline']} (B)" for c in shown]
    rules = ["handle in mask" if ATTRIBUTE_HANDLE_IN_MASK[c["id"]] else "handle not in mask" for c in shown]
    assert [ax.get_title() for ax in bottom] == rules
    examples = _handle_examples(0, "val", 128, attributes=True, wanted=group_b)
    assert [e["category_id"] for e in examples] == list(group_b)
    plt.close(figure)


def test_handles_figure_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"handles_figure: split must be one of \['train', 'val'\], got 'test'"):
        handles_figure(split="test")
    with pytest.raises(ValueError, match=r"handles_figure: image_size must be >= 64, got 32"):
        handles_figure(image_size=32)
    with pytest.raises(ValueError, match=r"handles_figure: size must be > 0, got 0"):
        handles_figure(size=0)
    with pytest.raises(ValueError, match=r"handles_figure: categories must be a non-empty sequence of category ids "
                                         r"from 1\.\.9, got \(12,\)"):
        handles_figure(categories=(12,))
    with pytest.raises(TypeError, match="handles_figure: attributes must be a bool, got str"):
        handles_figure(attributes="yes")


# -------------------------------------------------------------------------------------- the diagram


def _boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("kwargs", [{}, dict(representation=1024, mask_dim=256, hidden=1024, size=(8, 3))])
def test_weight_transfer_diagram_texts_and_no_overlap(kwargs):
    figure = weight_transfer_diagram(**kwargs)
    assert isinstance(figure, Figure) and len(figure.axes) == 1
    rep, dim, hidden = kwargs.get("representation", 256), kwargs.get("mask_dim", 64), kwargs.get("hidden", 256)
    text = "\n".join(t.get_text() for t in figure.axes[0].texts)
    for part in (f"[K × {rep}]", f"[4K × {rep}]", f"= {5 * rep}", f"Linear {5 * rep}→{hidden}",
                 f"Linear {hidden}→{dim}", f"[R, {dim}, 14, 14]", "stop-gradient", "classes in A", "classes in B",
                 "fused MLP"):
        assert part in text, part
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    extents = []
    for t in figure.axes[0].texts:
        if isinstance(t, Annotation):  # the arrows
            continue
        patch = t.get_bbox_patch()
        extent = (patch or t).get_window_extent(renderer)
        extents.append((t.get_text(), extent))
        # everything inside the figure
        assert extent.x0 >= 0 and extent.y0 >= 0, t.get_text()
        assert extent.x1 <= figure.bbox.width and extent.y1 <= figure.bbox.height, t.get_text()
    for (name_a, a), (name_b, b) in itertools.combinations(extents, 2):
        assert not _boxes_overlap(a, b), (name_a, name_b)
    plt.close(figure)


def test_weight_transfer_diagram_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"weight_transfer_diagram: mask_dim must be >= 1, got 0"):
        weight_transfer_diagram(mask_dim=0)
    with pytest.raises(TypeError, match=r"weight_transfer_diagram: representation must be an int"):
        weight_transfer_diagram(representation=2.5)
    with pytest.raises(ValueError, match=r"weight_transfer_diagram: size must be \(width, height\)"):
        weight_transfer_diagram(size=9)


# ------------------------------------------------------------------------------- weight similarity


def test_cosine_similarity_matrix_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    weights = torch.randn(6, 11, generator=generator, dtype=torch.float64)
    weights[4] = -3 * weights[2]  # opposite direction: -1
    expected = np.empty((5, 5))
    for i in range(5):
        for j in range(5):
            a, b = weights[i + 1].tolist(), weights[j + 1].tolist()
            dot = sum(x * y for x, y in zip(a, b))
            expected[i, j] = dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)
    ours = cosine_similarity_matrix(weights)
    assert ours.dtype == np.float64 and ours.shape == (5, 5)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(ours), 1.0, atol=1e-12)
    assert ours[1, 3] == pytest.approx(-1.0)
    np.testing.assert_allclose(cosine_similarity_matrix(weights.float().numpy()), expected, atol=1e-6)
    # a float32 tensor that requires grad (model weights) works as is
    np.testing.assert_allclose(cosine_similarity_matrix(weights.float().requires_grad_()), expected, atol=1e-6)


def test_cosine_similarity_matrix_bad_input_raises():
    with pytest.raises(ValueError, match=r"cosine_similarity_matrix: weights row 2 is all zeros"):
        cosine_similarity_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"cosine_similarity_matrix: weights must be \[K, D\] with K >= 2"):
        cosine_similarity_matrix(torch.ones(5))
    with pytest.raises(TypeError, match=r"cosine_similarity_matrix: weights must be a Tensor or ndarray"):
        cosine_similarity_matrix([[1.0, 2.0], [3.0, 4.0]])


def test_weight_similarity_figure():
    generator = torch.Generator().manual_seed(1)
    w_det, w_seg = torch.randn(10, 40, generator=generator), torch.randn(10, 8, generator=generator)
    figure = weight_similarity_figure(w_det, w_seg, NAMES, groups=GROUPS)
    assert isinstance(figure, Figure) and len(figure.axes) == 3  # two heatmaps and the colour bar
    figure.canvas.draw()
    for ax, weights in zip(figure.axes[:2], (w_det, w_seg)):
        matrix = cosine_similarity_matrix(weights)
        np.testing.assert_allclose(ax.images[0].get_array(), matrix)
        assert ax.images[0].get_clim() == (-1, 1)
        assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in matrix.flat]
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert labels[0] == "circle (A)" and labels[2] == "square (B)"
        colors = {t.get_text(): t.get_color() for t in ax.get_xticklabels()}
        assert colors["circle (A)"] == colors["ring (A)"] != colors["square (B)"]
    plain = weight_similarity_figure(w_det.numpy(), w_seg, NAMES)
    assert [t.get_text() for t in plain.axes[0].get_xticklabels()] == NAMES
    plt.close(figure)
    plt.close(plain)


def test_weight_similarity_figure_bad_input_raises():
    w_det, w_seg = torch.randn(10, 40), torch.randn(10, 8)
    with pytest.raises(ValueError, match=r"weight_similarity_figure: names must hold the K - 1 = 9 foreground names"):
        weight_similarity_figure(w_det, w_seg, ["background"] + NAMES)
    with pytest.raises(TypeError, match=r"weight_similarity_figure: names must be a list of str"):
        weight_similarity_figure(w_det, w_seg, "circle")
    with pytest.raises(ValueError, match=r"weight_similarity_figure: w_seg must have K = 10 rows like w_det"):
        weight_similarity_figure(w_det, w_seg[:5], NAMES)
    with pytest.raises(TypeError, match=r"weight_similarity_figure: w_seg must be a Tensor or ndarray"):
        weight_similarity_figure(w_det, None, NAMES)
    with pytest.raises(ValueError, match=r"weight_similarity_figure: groups\['B'\] must hold class ids in 1..9, got 0"):
        weight_similarity_figure(w_det, w_seg, NAMES, groups={"A": (1,), "B": (0,)})


# ------------------------------------------------------------------------------------ given boxes


def crop_rows():
    """Two 6 x 8 crops: a 2 x 4 body with a 1 x 2 handle; model 'keep' keeps the handle, 'drop' drops it."""
    rows = []
    for title, handle_in_mask in (("ring", True), ("square", False)):
        body = np.zeros((6, 8), bool)
        body[2:4, 1:5] = True  # 8 px
        handle = np.zeros((6, 8), bool)
        handle[2, 5:7] = True  # 2 px
        target = body | handle if handle_in_mask else body
        image = np.full((6, 8, 3), 40, np.uint8)
        image[body | handle] = (200, 60, 60)
        rows.append(dict(image=image, target=target, handle=handle, title=title, masks={
            "keep": torch.from_numpy((body | handle).astype(np.float32) * 0.8),  # probabilities
            "drop": body,  # a bool mask
        }))
    return rows


def test_given_box_figure_layout_and_ious():
    rows = crop_rows()
    rows[1]["image"] = torch.from_numpy(rows[1]["image"]).permute(2, 0, 1).float() / 255  # FloatTensor[3, h, w]
    rows[1]["handle"] = None
    figure = given_box_figure(rows)
    assert isinstance(figure, Figure) and len(figure.axes) == 2 * 4
    axes = np.array(figure.axes).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == ["image", "ground truth", "keep", "drop"]
    assert all(ax.get_title() == "" for ax in axes[1])
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["ring", "square"]
    # ring keeps its handle: 'keep' matches, 'drop' misses 2 of 10; square leaves it out: the reverse
    assert [ax.get_xlabel() for ax in axes[0, 2:]] == ["IoU 1.00", "IoU 0.80"]
    assert [ax.get_xlabel() for ax in axes[1, 2:]] == ["IoU 0.80", "IoU 1.00"]
    # the handle is outlined in every mask panel of the first row, in none of the second (handle=None)
    assert [len(ax.collections) for ax in axes[0]] == [0, 1, 1, 1]
    assert [len(ax.collections) for ax in axes[1]] == [0, 0, 0, 0]
    figure.canvas.draw()
    plt.close(figure)


def test_given_box_figure_bad_input_raises():
    with pytest.raises(ValueError, match=r"given_box_figure: crops must be a non-empty list of dicts"):
        given_box_figure([])
    rows = crop_rows()
    rows[1]["masks"] = {"drop": rows[1]["masks"]["drop"], "keep": rows[1]["masks"]["keep"]}
    with pytest.raises(ValueError, match=r"given_box_figure: crops\[1\]\['masks'\] must have the models of crops\[0\]"):
        given_box_figure(rows)
    rows = crop_rows()
    rows[0]["masks"]["drop"] = np.zeros((6, 7), bool)
    with pytest.raises(ValueError, match=r"given_box_figure: crops\[0\]\['masks'\]\['drop'\] must have the image's "
                                         r"shape \(6, 8\)"):
        given_box_figure(rows)
    rows = crop_rows()
    rows[1]["handle"] = np.zeros((8, 6), bool)
    with pytest.raises(ValueError, match=r"given_box_figure: crops\[1\]\['handle'\] must have the image's shape"):
        given_box_figure(rows)
    rows = crop_rows()
    del rows[0]["target"]
    with pytest.raises(ValueError, match=r"given_box_figure: crops\[0\] lacks target"):
        given_box_figure(rows)
    rows = crop_rows()
    rows[0]["image"] = np.zeros((6, 8), np.uint8)
    with pytest.raises(ValueError, match=r"given_box_figure: crops\[0\]\['image'\] must be uint8 \[h, w, 3\]"):
        given_box_figure(rows)
    rows = crop_rows()
    rows[0]["masks"] = {}
    with pytest.raises(ValueError, match=r"given_box_figure: crops\[0\]\['masks'\] must be a non-empty dict"):
        given_box_figure(rows)
