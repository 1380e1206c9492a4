"""segnotes.data.voc on the VOC fixture of tests/conftest.py (palette PNG class and object maps)."""
import numpy as np
import pytest
import torch
from PIL import Image

from segnotes.data import VOCInstances, VOCSemantic
from segnotes.data import voc as voc_module


def test_the_folder_is_found_from_either_root(voc_folder):
    assert voc_module.voc_folder("f", voc_folder) == voc_folder
    assert voc_module.voc_folder("f", voc_folder.parent.parent) == voc_folder  # the folder holding VOCdevkit
    assert voc_module.voc_class_name(15) == "person" and voc_module.voc_class_name(30) == "class_30"


def test_instances_come_from_the_object_map_with_the_class_under_them(voc_folder):
    dataset = VOCInstances(voc_folder, "train")
    assert len(dataset) == 8 and [c["name"] for c in dataset.categories] == ["cat", "person"]
    for index in range(len(dataset)):
        image, target = dataset[index]
        with Image.open(voc_folder / "SegmentationObject" / f"{dataset.ids[index]}.png") as png:
            objects = np.asarray(png)
        with Image.open(voc_folder / "SegmentationClass" / f"{dataset.ids[index]}.png") as png:
            classes = np.asarray(png)
        values = [v for v in np.unique(objects) if v not in (0, 255)]
        assert len(target["masks"]) == len(values) and image.shape == (3, *objects.shape)
        for k, value in enumerate(values):
            mask = target["masks"][k].numpy().astype(bool)
            assert (mask == (objects == value)).all()  # the void border is no object's
            assert set(np.unique(classes[mask])) == {int(target["labels"][k])}
            ys, xs = np.nonzero(mask)
            assert target["boxes"][k].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert target["area"][k] == mask.sum()
        # the COCO view holds the same instances, for AP
        annotations = dataset.coco.imgToAnns[int(target["image_id"])]
        assert [a["category_id"] for a in annotations] == target["labels"].tolist()
        assert [a["area"] for a in annotations] == target["area"].tolist()
    dataset.check_files()


def test_semantic_reads_the_class_map_and_its_values(voc_folder):
    dataset = VOCSemantic(voc_folder, "val")
    image, label = dataset[0]
    assert label.dtype == torch.int64 and set(label.unique().tolist()) <= {0, 8, 15, 255} and (label == 255).any()
    assert dataset.label_values() == {8, 15}


def test_missing_files_are_named(tmp_path, voc_folder):
    with pytest.raises(FileNotFoundError, match="VOCInstances: no split file .*test.txt; the splits there: train, val"):
        VOCInstances(voc_folder, "test")
    import shutil

    voc = tmp_path / "voc"
    shutil.copytree(voc_folder, voc)
    name = (voc / "ImageSets" / "Segmentation" / "train.txt").read_text().split()[0]
    (voc / "SegmentationObject" / f"{name}.png").unlink()
    with pytest.raises(FileNotFoundError, match=f"VOCInstances: 1 mask\\(s\\) of split 'train' are missing, e.g. .*{name}.png"):
        VOCInstances(voc, "train")
    VOCSemantic(voc, "train")  # the class maps alone are complete
    (voc / "JPEGImages" / f"{name}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=f"VOCSemantic: 1 image\\(s\\) listed in ImageSets/Segmentation/train.txt "
                                                f"are missing, e.g. .*{name}.jpg"):
        VOCSemantic(voc, "train")
