"""Figures for the "Learning to Segment Every Thing" chapter (Mask^X R-CNN, :mod:`segnotes.models.maskx_rcnn`).

* :func:`handles_figure`: one instance of each category of the ``handles=True`` shapes data and
  the mask its annotation defines (with or without the handle, :data:`segnotes.data.HANDLE_IN_MASK`).
* :func:`weight_transfer_diagram`: the schematic ``w_seg^c = T(w_det^c)``, no data.
* :func:`weight_similarity_figure`: cosine similarities between classes' detection weights and
  between their transferred mask weights (:func:`cosine_similarity_matrix` gives the numbers).
* :func:`given_box_figure`: several models' masks on the same instances (each cropped to its box),
  with the handle outlined, so one sees which models kept it.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from .._checks import check_choice, check_int, check_positive, describe
from ..data import ATTRIBUTE_CATEGORIES, ATTRIBUTE_HANDLE_IN_MASK, CATEGORIES, HANDLE_IN_MASK, render
from ..data.shapes import MIN_IMAGE_SIZE, SPLITS
from .compare import _new_figure, _rgba8
from .masks import _to_numpy_image, overlay_instances

__all__ = [
    "handles_figure",
    "weight_transfer_diagram",
    "cosine_similarity_matrix",
    "weight_similarity_figure",
    "given_box_figure",
]

MASK_COLOR = (0.20, 0.80, 0.35)  # the mask (annotated or predicted)
LEFT_OUT_COLOR = (0.90, 0.15, 0.15)  # a handle the annotation leaves out of the mask
HANDLE_EDGE = (1.0, 0.85, 0.0)  # outline of the handle pixels
GROUP_COLORS = ("#1f5fbf", "#c45a00", "#6a3d9a", "#2a8a2a")  # tick labels of groups, in the order given


def _pixel_outline(ax, mask: np.ndarray, color, linewidth: float = 0.9) -> LineCollection:
    """Draw the border of the ``True`` pixels of ``mask`` (bool [H, W]) along pixel edges, in imshow's coordinates."""
    padded = np.pad(mask, 1)
    # horizontal edges: pixel (r - 1, c) differs from pixel (r, c); the edge lies at y = r - 0.5
    r, c = np.nonzero(padded[1:, 1:-1] != padded[:-1, 1:-1])  # r in 0..H, c in 0..W-1
    horizontal = np.stack([np.stack([c - 0.5, r - 0.5], 1), np.stack([c + 0.5, r - 0.5], 1)], 1)  # [E, 2, 2]
    # vertical edges: pixel (r, c - 1) differs from pixel (r, c); the edge lies at x = c - 0.5
    r, c = np.nonzero(padded[1:-1, 1:] != padded[1:-1, :-1])  # r in 0..H-1, c in 0..W
    vertical = np.stack([np.stack([c - 0.5, r - 0.5], 1), np.stack([c - 0.5, r + 0.5], 1)], 1)  # [E, 2, 2]
    lines = LineCollection(np.concatenate([horizontal, vertical]), colors=[color], linewidths=linewidth)
    return ax.add_collection(lines, autolim=False)


def _bare(ax) -> None:
    """No ticks or spines, but (unlike ``set_axis_off``) x and y labels still show."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


# ---------------------------------------------------------------------------------------------
# Figure 1: the handles and the per-category mask rule.


def _handle_examples(seed: int, split: str, image_size: int, max_images: int = 200, attributes: bool = False,
                     wanted=None) -> list[dict]:
    """The first clear instance of every category in ``render(seed, split, i, handles=True)``, i = 0, 1, ...

    "Clear": not crowd, at least 6 visible handle pixels and 150 owned pixels. Returns one dict per
    category in id order: ``category_id``, ``index`` (image), ``k`` (annotation, 1-based), ``image``
    (uint8 [h, w, 3]), ``owned`` and ``handle`` (bool [h, w]), all cropped to the box plus 3 px.
    ``attributes`` renders the attributes variant; ``wanted`` limits the categories (ids).
    """
    categories = ATTRIBUTE_CATEGORIES if attributes else CATEGORIES
    wanted = {c["id"] for c in categories} if wanted is None else set(wanted)
    found = {}
    for index in range(max_images):
        rendered = render(seed, split, index, image_size=image_size, handles=True, attributes=attributes)
        for k, (category_id, crowd) in enumerate(zip(rendered.category_ids, rendered.iscrowd), start=1):
            if crowd or category_id in found or category_id not in wanted:
                continue
            owned = rendered.owners == k
            handle = owned & rendered.handles
            if handle.sum() < 6 or owned.sum() < 150:
                continue
            rows, cols = np.flatnonzero(owned.any(axis=1)), np.flatnonzero(owned.any(axis=0))
            y1, y2 = max(rows[0] - 3, 0), min(rows[-1] + 4, image_size)  # box plus a 3 px margin
            x1, x2 = max(cols[0] - 3, 0), min(cols[-1] + 4, image_size)
            found[category_id] = dict(
                category_id=category_id, index=index, k=k, image=rendered.image[y1:y2, x1:x2],
                owned=owned[y1:y2, x1:x2], handle=handle[y1:y2, x1:x2],
            )
        if len(found) == len(wanted):
            return [found[i] for i in sorted(found)]
    missing = [c["name"] for c in categories if c["id"] in wanted and c["id"] not in found]
    raise RuntimeError(
        f"handles_figure: no clear instance of {', '.join(missing)} in the first {max_images} {split} images "
        f"(seed {seed}, image_size {image_size})"
    )


def handles_figure(seed: int = 0, split: str = "val", image_size: int = 128, size: float = 1.6, *,
                   attributes: bool = False, categories=None) -> Figure:
    """One instance of every category with its handle, and the mask its annotation defines.

    Scans ``segnotes.data.render(seed, split, i, image_size, handles=True)`` for i = 0, 1, ... (at
    most 200 images) and takes, for each category, the first non-crowd instance with at least 6
    visible handle pixels and 150 owned pixels, cropped to its box (which covers the handle) plus
    3 px. Top row: the crop, titled "name (group)". Bottom row: the annotated mask in green over the
    dimmed crop; a handle that :data:`segnotes.data.HANDLE_IN_MASK` leaves out of the mask in red;
    the handle's pixels outlined in yellow either way; titled "handle in mask" or "handle not in mask".

    Args:
        seed (int): the data set's seed.
        split (str): ``"train"`` or ``"val"``.
        image_size (int): side of the rendered images, pixels.
        size (float): inches per panel.
        attributes (bool): the 50-category attributes variant (``render(..., attributes=True)``),
            whose handle rule is :data:`segnotes.data.ATTRIBUTE_HANDLE_IN_MASK`; titles break
            before the outline.
        categories (Sequence[int] or None): the category ids to show (default: all of the variant).

    Returns:
        Figure: 2 x C axes, row-major (crops first, then masks), one column per category in id order.

    Raises:
        RuntimeError: a category has no clear instance in the first 200 images (names it).
    """
    fn = "handles_figure"
    check_int(fn, "seed", seed, minimum=0)
    check_choice(fn, "split", split, SPLITS)
    check_int(fn, "image_size", image_size, minimum=MIN_IMAGE_SIZE)
    check_positive(fn, "size", size)
    if not isinstance(attributes, bool):
        raise TypeError(f"{fn}: attributes must be a bool, got {describe(attributes)}")
    by_id = {c["id"]: c for c in (ATTRIBUTE_CATEGORIES if attributes else CATEGORIES)}
    if categories is not None:
        if isinstance(categories, (str, bytes)) or not all(isinstance(c, int) and c in by_id for c in categories) \
                or not categories:
            raise ValueError(f"{fn}: categories must be a non-empty sequence of category ids from "
                             f"{min(by_id)}..{max(by_id)}, got {categories!r}")
    rule = ATTRIBUTE_HANDLE_IN_MASK if attributes else HANDLE_IN_MASK
    examples = _handle_examples(seed, split, image_size, attributes=attributes, wanted=categories)
    figure = _new_figure(size * len(examples), size * 2 + (0.5 if attributes else 0.35))
    axes = figure.subplots(2, len(examples), squeeze=False)
    for column, example in enumerate(examples):
        category = by_id[example["category_id"]]
        in_mask = rule[category["id"]]
        owned, handle = example["owned"], example["handle"]
        mask = owned if in_mask else owned & ~handle
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(example["image"], interpolation="nearest")
        name = category["name"].rsplit(" ", 1) if attributes else [category["name"]]
        top.set_title("\n".join(name[:-1] + [f"{name[-1]} ({category['group']})"]), fontsize=8)
        dimmed = 0.35 * _to_numpy_image(example["image"])
        layers = np.stack([mask, owned & handle & ~mask])  # [2, h, w]: the mask, the left-out handle
        bottom.imshow(_rgba8(overlay_instances(dimmed, layers, alpha=0.8, colors=[MASK_COLOR, LEFT_OUT_COLOR])),
                      interpolation="nearest")
        _pixel_outline(bottom, handle, HANDLE_EDGE, linewidth=0.7)
        bottom.set_title("handle in mask" if in_mask else "handle not in mask", fontsize=7)
        for ax in (top, bottom):
            ax.set_axis_off()
    figure.legend(
        handles=[Patch(color=MASK_COLOR, label="annotated mask"), Patch(color=LEFT_OUT_COLOR, label="handle left out"),
                 Patch(facecolor="none", edgecolor=HANDLE_EDGE, label="handle pixels")],
        loc="outside lower center", ncols=3, fontsize=7, frameon=False,
    )
    return figure


# ---------------------------------------------------------------------------------------------
# Figure 2: the weight transfer function, as a schematic.


def weight_transfer_diagram(
    representation: int = 256, mask_dim: int = 64, hidden: int = 256, size: tuple[float, float] = (9, 3.2)
) -> Figure:
    """Schematic of Mask^X R-CNN's mask logits for class ``c``: ``w_seg^c = T(w_det^c)`` (no data).

    Top lane (detection weights): box head features ``[R, rep]`` feed the box predictor
    (``cls_score`` ``W_cls [K x rep]``, ``bbox_pred`` ``W_box [4K x rep]``); class ``c``'s rows
    make ``w_det^c`` (``rep + 4 rep``), which passes a stop-gradient into
    ``T`` (``Linear(5 rep, hidden)``, ``LeakyReLU``, ``Linear(hidden, mask_dim)``) and comes out as
    ``w_seg^c [mask_dim]``. Bottom lane (masks): the mask head's output ``[R, mask_dim, 14, 14]`` is
    upsampled by the 2x deconvolution and ``w_seg^c`` is the weight of the 1 x 1 conv on the result,
    giving class ``c``'s ``28 x 28`` logits; the class-agnostic fused MLP's logits (from the same 14 x
    14 output) are added before the sigmoid. A note says which classes train ``T`` (A) and which
    only use it (B).

    Args:
        representation (int): ``rep``, the box head's output width (256 in the tiny model).
        mask_dim (int): channels of the mask features, the width of ``w_seg``.
        hidden (int): ``T``'s hidden width.
        size (Tuple[float, float]): figure (width, height), inches.

    Returns:
        Figure: one axes (axis off) holding the patches, arrows and texts.
    """
    fn = "weight_transfer_diagram"
    rep = check_int(fn, "representation", representation, minimum=1)
    dim = check_int(fn, "mask_dim", mask_dim, minimum=1)
    check_int(fn, "hidden", hidden, minimum=1)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{fn}: size must be (width, height) in inches, got {describe(size)}")
    for value in size:
        check_positive(fn, "size", value)
    figure = _new_figure(*size, layout=None)
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 20)
    ax.set_ylim(0, 7)
    ax.set_axis_off()

    def box(x, y, text, color="#eef3fb", edge="#4a6fa5", **kw):
        return ax.text(x, y, text, ha="center", va="center", fontsize=7.5, linespacing=1.35, zorder=3,
                       bbox=dict(boxstyle="round,pad=0.45", facecolor=color, edgecolor=edge, linewidth=0.9), **kw)

    def arrow(source, target, text=None, color="0.25", style="-|>", at=(0.5, 0.5), **kw):
        """An arrow between two text boxes; ``at`` is where on each box (fractions) it starts / ends."""
        start, end = kw.pop("start", (1.0, at[0])), kw.pop("end", (0.0, at[1]))
        return ax.annotate("", xy=end, xycoords=target, xytext=start, textcoords=source, zorder=2,
                           arrowprops=dict(arrowstyle=style, color=color, linewidth=1.0, shrinkA=2, shrinkB=2, **kw))

    mask_color, weight_color = "#eefaf0", "#fdf3e6"
    features = box(1.7, 5.5, f"box head\nfeatures\n[R, {rep}]")
    predictor = box(5.9, 5.5, f"box predictor\ncls_score: $W_{{cls}}$ [K × {rep}]\n"
                              f"bbox_pred: $W_{{box}}$ [4K × {rep}]")
    w_det = box(10.3, 5.5, f"row c: $w_{{det}}^c$\ncls {rep} + box {4 * rep}\n= {5 * rep}", weight_color, "#b8742a")
    transfer = box(14.6, 5.5, f"T\nLinear {5 * rep}→{hidden}\nLeakyReLU\nLinear {hidden}→{dim}",
                   "#fff8d6", "#a08400")
    w_seg = box(18.4, 5.5, f"$w_{{seg}}^c$\n[{dim}]", weight_color, "#b8742a")
    arrow(features, predictor)
    arrow(predictor, w_det)
    arrow(w_det, transfer)
    arrow(transfer, w_seg)
    # the stop-gradient: a double bar across the w_det -> T arrow
    ax.text(12.45, 5.5, "//", ha="center", va="center", fontsize=11, color="#c0392b", fontweight="bold", zorder=4)
    ax.text(12.45, 6.6, "stop-gradient", ha="center", va="center", fontsize=6.5, color="#c0392b")

    mask_features = box(1.7, 2.4, f"mask head output\n[R, {dim}, 14, 14]", mask_color, "#3d8b4f")
    conv = box(9.2, 2.4, "2× deconv, ReLU, then 1×1 conv\nwith weights $w_{seg}^c$\n→ class-c logits [R, 28, 28]",
               mask_color, "#3d8b4f")
    mlp = box(9.2, 0.6, "fused MLP (class-agnostic): 1×1 conv, fc\n→ [R, 1, 28, 28]", mask_color, "#3d8b4f")
    plus = ax.text(13.2, 2.4, "+", ha="center", va="center", fontsize=11, zorder=3,
                   bbox=dict(boxstyle="circle,pad=0.15", facecolor="white", edgecolor="0.3"))
    output = box(17.2, 2.4, "sigmoid\n→ class-c mask", mask_color, "#3d8b4f")
    arrow(mask_features, conv)
    arrow(mask_features, mlp, start=(0.75, 0.0), end=(0.0, 0.5), connectionstyle="angle,angleA=-90,angleB=180,rad=0")
    arrow(conv, plus)
    arrow(mlp, plus, start=(1.0, 0.5), end=(0.5, 0.0), connectionstyle="angle,angleA=0,angleB=-90,rad=0")
    arrow(plus, output)
    # w_seg^c down, across above the note, and into the conv: three pieces meeting at data points
    orange = "#b8742a"
    ax.annotate("", xy=(18.4, 4.25), xytext=(0.5, 0.0), textcoords=w_seg,
                arrowprops=dict(arrowstyle="-", color=orange, linewidth=1.0, shrinkA=2, shrinkB=0))
    ax.plot([18.4, 9.2], [4.25, 4.25], color=orange, linewidth=1.0, solid_capstyle="butt")
    ax.annotate("", xy=(0.5, 1.0), xycoords=conv, xytext=(9.2, 4.25), textcoords="data",
                arrowprops=dict(arrowstyle="-|>", color=orange, linewidth=1.0, shrinkA=0, shrinkB=2))
    ax.text(14.6, 3.55, "classes in A: the mask loss trains T\nclasses in B: T($w_{det}$) gives their masks",
            ha="center", va="center", fontsize=6.8, color="0.2", style="italic")
    return figure


# ---------------------------------------------------------------------------------------------
# Figure 3: how similar classes' weights are, before and after T.


def _weights_array(fn: str, name: str, weights) -> np.ndarray:
    if isinstance(weights, Tensor):
        array = weights.detach().cpu().double().numpy()
    elif isinstance(weights, np.ndarray) and np.issubdtype(weights.dtype, np.number):
        array = weights.astype(np.float64)
    else:
        raise TypeError(f"{fn}: {name} must be a Tensor or ndarray [K, D], got {describe(weights)}")
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{fn}: {name} must be [K, D] with K >= 2 (row 0 the background), got {describe(weights)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{fn}: {name} must be finite")
    return array


def cosine_similarity_matrix(weights) -> np.ndarray:
    """Cosine similarity between the foreground classes' weight rows (row 0, the background's, dropped).

    Args:
        weights (Tensor[K, D] or ndarray[K, D]): one row per class, row 0 the background's, e.g.
            ``detection_weights(model.roi_heads.box_predictor)`` or
            ``model.roi_heads.segmentation_weights()``.

    Returns:
        ndarray[K - 1, K - 1] (float64): entry ``(i, j)`` is ``cos(w[i + 1], w[j + 1])``, in [-1, 1];
        ones on the diagonal.

    Raises:
        ValueError: a foreground row is all zeros (its direction, and so its similarity, is undefined).
    """
    fn = "cosine_similarity_matrix"
    rows = _weights_array(fn, "weights", weights)[1:]  # [K-1, D]
    norms = np.linalg.norm(rows, axis=1)  # [K-1]
    if (norms == 0).any():
        raise ValueError(f"{fn}: weights row {int(np.flatnonzero(norms == 0)[0]) + 1} is all zeros")
    unit = rows / norms[:, None]  # [K-1, D]
    return np.clip(unit @ unit.T, -1.0, 1.0)  # [K-1, K-1]


def weight_similarity_figure(w_det, w_seg, names, groups: Mapping | None = None, size: float = 3.2) -> Figure:
    """Cosine similarity between the classes' detection weights (left) and mask weights (right).

    If ``T`` maps similar detectors to similar mask weights, a box-only class (B) gets mask weights
    near those of the mask classes (A) it resembles. Cells show :func:`cosine_similarity_matrix` with
    two decimals, coloured on a diverging scale from -1 to 1.

    Args:
        w_det (Tensor[K, D] or ndarray): detection weights, row 0 the background's (dropped).
        w_seg (Tensor[K, d] or ndarray): mask weights ``T(w_det)``, same K.
        names (Sequence[str]): the K - 1 *foreground* class names, class 1 first (no background).
        groups (Mapping[str, Sequence[int]], optional): group name -> class ids, e.g.
            ``segnotes.data.GROUPS``; tick labels get " (A)" etc. and one colour per group.
        size (float): inches per heatmap.

    Returns:
        Figure: three axes: the two heatmaps and the colour bar.
    """
    fn = "weight_similarity_figure"
    det = cosine_similarity_matrix(_weights_array(fn, "w_det", w_det))
    seg = cosine_similarity_matrix(_weights_array(fn, "w_seg", w_seg))
    k = det.shape[0] + 1
    if seg.shape[0] + 1 != k:
        raise ValueError(f"{fn}: w_seg must have K = {k} rows like w_det, got {describe(w_seg)}")
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{fn}: names must be a list of str, got {describe(names)}")
    if len(names) != k - 1:
        raise ValueError(
            f"{fn}: names must hold the K - 1 = {k - 1} foreground names (row 0 of the weights is the "
            f"background, which has no name here), got {len(names)}"
        )
    check_positive(fn, "size", size)
    labels, colors = list(names), ["black"] * (k - 1)
    for number, (group, ids) in enumerate((groups or {}).items()):
        for class_id in ids:
            if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or not 1 <= class_id < k:
                raise ValueError(f"{fn}: groups[{group!r}] must hold class ids in 1..{k - 1}, got {class_id!r}")
            labels[class_id - 1] = f"{names[class_id - 1]} ({group})"
            colors[class_id - 1] = GROUP_COLORS[number % len(GROUP_COLORS)]
    figure = _new_figure(2 * size + 0.7, size)
    axes = figure.subplots(1, 2)
    titles = (f"$w_{{det}}$ [{k}, {np.shape(w_det)[1]}]", f"$w_{{seg}} = T(w_{{det}})$ [{k}, {np.shape(w_seg)[1]}]")
    fontsize = min(6.0, 60.0 / k)
    for ax, matrix, title in zip(axes, (det, seg), titles):
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if abs(value) > 0.6 else "black")
        ax.set_title(title, fontsize=9)
        ax.set_xticks(range(k - 1), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(k - 1), labels, fontsize=7)
        for tick_labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            for label, color in zip(tick_labels, colors):
                label.set_color(color)
        ax.tick_params(length=0)
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="cosine similarity")
    return figure


# ---------------------------------------------------------------------------------------------
# Figure 4: models' masks on the same instances.


def _plane(fn: str, name: str, value, shape: tuple[int, int]) -> np.ndarray:
    """``value`` (Tensor or ndarray [h, w], bool or numeric) as a float64 array of shape ``shape``."""
    if isinstance(value, Tensor):
        array = value.detach().cpu().double().numpy()
    elif isinstance(value, np.ndarray) and (value.dtype == bool or np.issubdtype(value.dtype, np.number)):
        array = value.astype(np.float64)
    else:
        raise TypeError(f"{fn}: {name} must be a Tensor or ndarray [h, w], got {describe(value)}")
    if array.shape != shape:
        raise ValueError(f"{fn}: {name} must have the image's shape {shape}, got {describe(value)}")
    return array


def _check_crops(fn: str, crops) -> tuple[list[dict], list[str]]:
    """The rows as dicts (image float [h, w, 3]; target, handle, masks bool [h, w]; title) and the model names."""
    if not isinstance(crops, (list, tuple)) or not crops:
        raise ValueError(f"{fn}: crops must be a non-empty list of dicts, got {describe(crops)}")
    rows, models = [], None
    for r, row in enumerate(crops):
        if not isinstance(row, Mapping):
            raise TypeError(f"{fn}: crops[{r}] must be a dict, got {describe(row)}")
        missing = [key for key in ("image", "target", "title", "masks") if key not in row]
        if missing:
            raise ValueError(f"{fn}: crops[{r}] lacks {', '.join(missing)}")
        try:
            image = _to_numpy_image(row["image"])
        except (TypeError, ValueError) as error:
            raise ValueError(f"{fn}: crops[{r}]['image'] must be uint8 [h, w, 3] or FloatTensor[3, h, w] ({error})")
        shape = image.shape[:2]
        masks = row["masks"]
        if not isinstance(masks, Mapping) or not masks:
            raise ValueError(f"{fn}: crops[{r}]['masks'] must be a non-empty dict model name -> mask")
        if models is None:
            models = list(masks)
        elif list(masks) != models:
            raise ValueError(f"{fn}: crops[{r}]['masks'] must have the models of crops[0] in order {models}, "
                             f"got {list(masks)}")
        handle = row.get("handle")
        rows.append(dict(
            image=image,
            target=_plane(fn, f"crops[{r}]['target']", row["target"], shape) > 0.5,
            handle=None if handle is None else _plane(fn, f"crops[{r}]['handle']", handle, shape) > 0.5,
            title=str(row["title"]),
            masks={m: _plane(fn, f"crops[{r}]['masks'][{m!r}]", masks[m], shape) >= 0.5 for m in models},
        ))
    return rows, models


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def given_box_figure(crops, size: float = 1.4) -> Figure:
    """Models' masks on the same instances, each cropped to its (given) box: who keeps the handle?

    One row per instance: the image, the ground truth, then each model's mask (probability >= 0.5)
    in green over the dimmed image, with the IoU against the ground truth underneath. The handle's
    pixels are outlined in yellow in every mask panel.

    Args:
        crops (list of dict): one per row, each with ``image`` (ndarray[h, w, 3] uint8 or
            FloatTensor[3, h, w] in [0, 1]), ``target`` (bool [h, w], Tensor or ndarray: the annotated
            mask), ``handle`` (bool [h, w] or None: the handle's pixels), ``title`` (str, shown at the
            left) and ``masks`` (dict model name -> [h, w] probabilities or bool masks; the same names,
            in the same order, in every row).
        size (float): inches per panel.

    Returns:
        Figure: ``len(crops) x (2 + models)`` axes, row-major; column titles on the first row.
    """
    fn = "given_box_figure"
    rows, models = _check_crops(fn, crops)
    check_positive(fn, "size", size)
    columns = 2 + len(models)
    figure = _new_figure(size * columns + 0.3, (size + 0.2) * len(rows))
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        dimmed = 0.4 * row["image"]
        panels = [("image", None), ("ground truth", row["target"])] + [(m, row["masks"][m]) for m in models]
        for c, (name, mask) in enumerate(panels):
            ax = axes[r, c]
            _bare(ax)
            if mask is None:
                ax.imshow(_rgba8(row["image"]), interpolation="nearest")
            else:
                ax.imshow(_rgba8(overlay_instances(dimmed, mask[None], alpha=0.75, colors=[MASK_COLOR])),
                          interpolation="nearest")
                if row["handle"] is not None:
                    _pixel_outline(ax, row["handle"], HANDLE_EDGE, linewidth=0.7)
            if c >= 2:
                iou = _iou(mask, row["target"])
                ax.set_xlabel("IoU n/a" if np.isnan(iou) else f"IoU {iou:.2f}", fontsize=7, labelpad=2)
            if r == 0:
                ax.set_title(name, fontsize=8)
        axes[r, 0].set_ylabel(row["title"], fontsize=8)
    return figure
