"""segnotes.experiments.own_data: the recipe of segnotes train, its categories, data and models."""
import dataclasses
import importlib

import pytest
import torch

from segnotes.data.transforms import IMAGENET_MEAN
from segnotes.experiments import own_data
from segnotes.experiments.own_data import OwnDataRecipe, find_categories, open_split, recipe_from_meta

CATS = ((3, "square"), (7, "disc"))


def test_defaults_follow_the_model_and_round_trip_through_json(coco_folder):
    fcn = OwnDataRecipe("fcn8s", f"coco:{coco_folder}", CATS)
    assert (fcn.backbone, fcn.batch_size, fcn.lr, fcn.kind, fcn.num_classes) == ("vgg_small", 8, 3e-3, "semantic", 3)
    mask = OwnDataRecipe("mask-rcnn", f"coco:{coco_folder}", CATS, pretrained=True, backbone="resnet50_fpn")
    assert (mask.batch_size, mask.lr, mask.kind) == (4, 1e-4, "instances")
    assert fcn.label_of() == {3: 1, 7: 2} and fcn.id_of() == {0: 0, 1: 3, 2: 7}
    import json

    stored = json.loads(json.dumps(dataclasses.asdict(fcn)))  # as config.json and the checkpoint hold it
    assert recipe_from_meta(stored) == fcn


@pytest.mark.parametrize("change, message", [
    (dict(model="unet"), "OwnDataRecipe: model must be one of"),
    (dict(data="kitti:/x"), "OwnDataRecipe: data must be FORMAT:ROOT"),
    (dict(categories=()), "categories must hold at least one"),
    (dict(backbone="resnet50_fpn"), "backbone must be one of \\['vgg_small', 'vgg16'\\]"),
    (dict(pretrained=True), "pretrained weights exist for vgg16 only"),
    (dict(image_size=(32,), max_size=16), "max_size needs a shorter-side image_size at most max_size"),
    (dict(scale_range=(0.5, 2.0)), "scale_range is FCN's and needs a shorter-side image_size"),
    (dict(model="mask-rcnn", crop=64), "crop is FCN's"),
    (dict(model="mask-rcnn", image_size=(64, 80)), "a fixed image_size \\(height, width\\) is for FCN"),
    (dict(model="maskx-rcnn"), "maskx-rcnn needs mask_classes"),
    (dict(model="maskx-rcnn", mask_classes=(5,)), "mask_classes must be among the categories"),
    (dict(mask_classes=(3,)), "mask_classes is for maskx-rcnn"),
    (dict(epochs=0), "epochs must be >= 1"),
])
def test_bad_recipes_name_the_field(change, message):
    fields = {"model": "fcn8s", "data": "coco:/anywhere", "categories": CATS, **change}
    with pytest.raises(ValueError, match=message):
        OwnDataRecipe(**fields)


def test_categories_of_each_format(coco_folder, voc_folder, tmp_path):
    assert find_categories(f"coco:{coco_folder}", "train", "fcn8s") == CATS
    assert find_categories(f"voc:{voc_folder}", "train", "fcn8s") == ((8, "cat"), (15, "person"))
    assert find_categories(f"voc:{voc_folder}", "train", "mask-rcnn") == ((8, "cat"), (15, "person"))
    assert len(find_categories(f"shapes:{tmp_path}", "train", "fcn8s")) == 9


def test_splits_get_contiguous_labels(coco_folder, voc_folder):
    recipe = OwnDataRecipe("mask-rcnn", f"coco:{coco_folder}", CATS)
    _, target = open_split(recipe, "val", train=False)[0]
    assert set(target["labels"].tolist()) <= {1, 2}
    recipe = OwnDataRecipe("fcn8s", f"voc:{voc_folder}", ((8, "cat"), (15, "person")))
    _, label = open_split(recipe, "val", train=False)[0]
    assert set(label.unique().tolist()) <= {0, 1, 2, 255} and ((label == 1) | (label == 2)).any()


def test_vgg16_sees_imagenet_normalised_inputs(coco_folder):
    recipe = OwnDataRecipe("fcn32s", f"coco:{coco_folder}", CATS, backbone="vgg16", image_size=(32,))
    image, label = torch.zeros(3, 40, 60), torch.zeros(40, 60, dtype=torch.int64)
    out, out_label = own_data.model_transforms(recipe, train=False)(image, label)
    assert out.shape == (3, 32, 48) and out_label.shape == (32, 48)
    assert out[0, 0, 0] == pytest.approx(-IMAGENET_MEAN[0] / 0.229, rel=1e-5)
    small = dataclasses.replace(recipe, backbone="vgg_small")
    assert own_data.model_transforms(small, train=False)(image, label)[0].abs().max() == 0  # [0, 1] as the book


def test_models_are_built_from_the_recipe(coco_folder):
    recipe = OwnDataRecipe("maskx-rcnn", f"coco:{coco_folder}", CATS, mask_classes=(7,), image_size=(96,))
    model = own_data.build_model(recipe)
    assert model.num_classes == 3 and model.transform.min_size == (96,) and model.transform.max_size == 96
    assert own_data.build_model(OwnDataRecipe("fcn16s", f"coco:{coco_folder}", CATS)).variant == "fcn16s"


def test_a_pretrained_models_checkpoint_loads_without_fetching_imagenet_weights(coco_folder, monkeypatch):
    from torchvision.ops.misc import FrozenBatchNorm2d

    # the module, not the function segnotes.models re-exports under the same name
    mask_rcnn_module = importlib.import_module("segnotes.models.mask_rcnn")

    def offline(progress):
        raise AssertionError("ImageNet weights fetched")

    monkeypatch.setattr(mask_rcnn_module, "_load_resnet50_weights", offline)
    recipe = OwnDataRecipe("mask-rcnn", f"coco:{coco_folder}", CATS, backbone="resnet50_fpn", pretrained=True,
                           image_size=(64,))
    with pytest.raises(AssertionError, match="fetched"):
        own_data.build_model(recipe)  # training from ImageNet weights fetches them
    rebuilt = own_data.CHAPTER.rebuild({"recipe": dataclasses.asdict(recipe)})
    # the layout the ImageNet-initialised run trained (frozen BatchNorm), so its state dict loads strictly
    assert any(isinstance(m, FrozenBatchNorm2d) for m in rebuilt.modules())
    reference = own_data.build_model(dataclasses.replace(recipe, pretrained=False))
    assert set(rebuilt.state_dict()) != set(reference.state_dict())  # BatchNorm has num_batches_tracked
