"""segnotes.data.transforms: every step moves the image, its masks and its boxes together."""
import pytest
import torch

from segnotes.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PairTransform,
    eval_transforms,
    pad_collate,
    train_transforms,
)


def scene(height=40, width=60):
    """A dark image with a bright red rectangle (rows 8..19, columns 30..49) and its mask, box and label map."""
    image = torch.full((3, height, width), 0.1)
    mask = torch.zeros(height, width, dtype=torch.uint8)
    mask[8:20, 30:50] = 1
    image[0][mask.bool()] = 1.0
    label = mask.long() * 7
    label[0, :] = 255  # a void row stays void
    target = {"boxes": torch.tensor([[30.0, 8.0, 50.0, 20.0]]), "masks": mask[None], "labels": torch.tensor([7]),
              "area": torch.tensor([240.0]), "image_id": torch.tensor(5), "iscrowd": torch.tensor([0])}
    return image, label, target


def box_of(mask):
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    return torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)


def red(image):
    return image[0] > 0.55  # where the rectangle is, after any resampling


@pytest.mark.parametrize("size", [20, (30, 90)])
def test_resize_keeps_image_masks_boxes_and_labels_together(size):
    image, label, target = scene()
    out_image, out = eval_transforms("instances", size=size)(image, target)
    expected = (20, 30) if size == 20 else (30, 90)  # shorter side 20 keeps 2:3; or fixed
    assert out_image.shape == (3, *expected) and out["masks"].shape == (1, *expected)
    assert type(out_image) is torch.Tensor and type(out["boxes"]) is torch.Tensor  # plain tensors back
    scale = torch.tensor([expected[1] / 60, expected[0] / 40] * 2)
    torch.testing.assert_close(out["boxes"][0], target["boxes"][0] * scale)
    torch.testing.assert_close(box_of(out["masks"][0].bool()), out["boxes"][0], atol=1.0, rtol=0)
    assert (red(out_image) == out["masks"][0].bool()).float().mean() > 0.97
    assert out["area"].tolist() == [float(out["masks"][0].sum())]  # recomputed
    assert torch.equal(out["labels"], target["labels"]) and int(out["image_id"]) == 5
    out_image, out_label = eval_transforms("semantic", size=size)(image, label)
    assert out_label.shape == expected and out_label.dtype == torch.int64
    assert set(out_label.unique().tolist()) <= {0, 7, 255}  # nearest neighbour: no blended labels
    assert ((out_label == 7) == red(out_image)).float().mean() > 0.97


def test_max_size_caps_the_longer_side():
    image, label, _ = scene(40, 120)
    out_image, out_label = eval_transforms("semantic", size=30, max_size=60)(image, label)
    assert out_image.shape[1:] == out_label.shape == (20, 60)


def test_flip_mirrors_all_three():
    image, label, target = scene()
    flips = PairTransform([__import__("torchvision").transforms.v2.RandomHorizontalFlip(p=1.0)])
    out_image, out = flips(image, target)
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out["masks"], target["masks"].flip(-1))
    torch.testing.assert_close(out["boxes"], torch.tensor([[10.0, 8.0, 30.0, 20.0]]))  # x' = W - x
    torch.testing.assert_close(box_of(out["masks"][0].bool()), out["boxes"][0])
    _, out_label = flips(image, label)
    assert torch.equal(out_label, label.flip(-1))


def test_random_steps_draw_from_the_global_generator():
    image, label, target = scene()
    transform = train_transforms("instances", flip=True)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        results.append([transform(image, target)[1]["boxes"] for _ in range(12)])
    assert all(torch.equal(a, b) for a, b in zip(*results))  # same seed, same flips
    flipped = {float(boxes[0, 0]) for boxes in results[0]}
    assert flipped == {30.0, 10.0}  # both outcomes occur


def test_scale_jitter_and_crop_for_fcn():
    image, label, _ = scene()
    transform = train_transforms("semantic", size=40, scale_range=(0.5, 2.0), crop=48, flip=True)
    torch.manual_seed(0)
    shorter = set()
    for _ in range(10):
        out_image, out_label = transform(image, label)
        assert out_image.shape == (3, 48, 48) and out_label.shape == (48, 48)
        # padding (image 0, label 255) and content agree: red pixels carry label 7, padded pixels are void
        assert ((out_label == 7) == red(out_image)).float().mean() > 0.95
        padded = (out_image == 0).all(0)
        assert (out_label[padded] == 255).all()
        shorter.add(bool(padded.any()))
    assert shorter == {True, False}  # some scales needed padding, some did not


def test_normalize_changes_the_image_only():
    image, label, _ = scene()
    out_image, out_label = eval_transforms("semantic", mean=IMAGENET_MEAN, std=IMAGENET_STD)(image, label)
    expected = (image - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(out_image, expected)
    assert torch.equal(out_label, label)


def test_pad_collate_pads_with_ignore():
    a = (torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.int64))
    b = (torch.ones(3, 4, 1), torch.ones(4, 1, dtype=torch.int64))
    images, labels = pad_collate([a, b])
    assert images.shape == (2, 3, 4, 3) and labels.shape == (2, 4, 3)
    assert labels[0, 2:].eq(255).all() and labels[1, :, 1:].eq(255).all() and images[1, :, :, 1:].eq(0).all()
    assert labels[0, :2].eq(0).all() and labels[1, :, 0].eq(1).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="train_transforms: kind must be one of"):
        train_transforms("boxes")
    with pytest.raises(ValueError, match="train_transforms: crop is for semantic segmentation"):
        train_transforms("instances", crop=32)
    with pytest.raises(ValueError, match="train_transforms: scale_range needs an int size"):
        train_transforms("semantic", scale_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="eval_transforms: max_size must be at least size=30, got 20"):
        eval_transforms("semantic", size=30, max_size=20)
    with pytest.raises(ValueError, match="eval_transforms: max_size applies to a shorter-side size"):
        eval_transforms("semantic", size=(30, 40), max_size=50)
    with pytest.raises(TypeError, match="PairTransform: target must be a label"):
        eval_transforms("semantic")(torch.zeros(3, 4, 4), [1])
    with pytest.raises(TypeError, match=r"PairTransform: transforms\[0\] must be callable"):
        PairTransform([3])
