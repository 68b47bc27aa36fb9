"""CocoInstances on a tiny COCO file written here: categories, masks from every segmentation form, crowd
handling, and one error message per problem the reader refuses."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from minseg.data.coco import CocoInstances
from minseg.data.dataset import DatasetError
from minseg.data.instance_loader import InstanceDataLoader
from minseg.data.rle import rle_encode

HEIGHT, WIDTH = 8, 10


def dog_mask():
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[4:7, 5:9] = 1
    return mask


def crowd_mask():
    mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    mask[0:2, 6:10] = 1
    return mask


def coco_json():
    return {
        "images": [{"id": 5, "file_name": "b.png", "height": 6, "width": 6},
                   {"id": 2, "file_name": "a.png", "height": HEIGHT, "width": WIDTH}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            # a polygon whose bbox in the file is wrong: the box comes from the mask
            {"id": 1, "image_id": 2, "category_id": 3, "iscrowd": 0, "bbox": [0, 0, 1, 1],
             "segmentation": [[1, 1, 4, 1, 4, 3, 1, 3]]},
            {"id": 2, "image_id": 2, "category_id": 7, "iscrowd": 0, "segmentation": rle_encode(dog_mask())},
            {"id": 3, "image_id": 2, "category_id": 7, "iscrowd": 1,
             "segmentation": rle_encode(crowd_mask(), compressed=True)},
        ]}


def write(tmp_path, data=None, sizes=None):
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (height, width) in (sizes or {"a.png": (HEIGHT, WIDTH), "b.png": (6, 6)}).items():
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / name)
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco_json() if data is None else data))
    return folder, path


def test_categories_become_contiguous_labels_in_id_order(tmp_path):
    ds = CocoInstances(*write(tmp_path))
    assert ds.things == ("cat", "dog") and ds.category_ids == [3, 7] and ds.label_of == {3: 1, 7: 2}
    assert ds.num_things == 2 and ds.num_stuff == 0 and ds.stuff == () and ds.categories == ("cat", "dog")
    assert ds.image_ids == [2, 5] and len(ds) == 2


def test_an_image_and_its_target(tmp_path):
    folder, path = write(tmp_path)
    image, target = CocoInstances(folder, path)[0]
    np.testing.assert_array_equal(image, np.asarray(Image.open(folder / "a.png")))
    cat = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    cat[1:3, 1:4] = 1  # the rectangle x 1..4, y 1..3: the pixels whose centres it holds
    np.testing.assert_array_equal(target["labels"], [1, 2])
    np.testing.assert_array_equal(target["masks"], np.stack([cat, dog_mask()]))
    assert target["masks"].dtype == np.uint8
    np.testing.assert_array_equal(target["boxes"], np.array([[1, 1, 4, 3], [5, 4, 9, 7]], dtype=np.float32))
    expected = np.full((HEIGHT, WIDTH), -100)
    expected[cat == 1], expected[dog_mask() == 1] = 0, 1  # category = label - 1 (no stuff); crowd stays -100
    np.testing.assert_array_equal(target["semantic"], expected)
    np.testing.assert_array_equal(target["iscrowd"], [0, 0])
    assert target["image_id"] == 2


def test_crowd_annotations_are_kept_only_when_asked(tmp_path):
    _, target = CocoInstances(*write(tmp_path), include_crowd=True)[0]
    np.testing.assert_array_equal(target["labels"], [1, 2, 2])
    np.testing.assert_array_equal(target["iscrowd"], [0, 0, 1])
    np.testing.assert_array_equal(target["masks"][2], crowd_mask())
    assert (target["semantic"][crowd_mask() == 1] == 1).all()


def test_images_without_annotations(tmp_path):
    folder, path = write(tmp_path)
    image, target = CocoInstances(folder, path)[1]
    assert image.shape == (6, 6, 3) and target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 6, 6)
    assert (target["semantic"] == -100).all() and target["labels"].dtype == np.int64
    assert CocoInstances(folder, path, remove_images_without_annotations=True).image_ids == [2]


def test_overlapping_annotations_keep_their_masks_and_the_later_one_wins_the_semantic_map(tmp_path):
    data = coco_json()
    data["annotations"][1]["segmentation"] = [[0, 0, 10, 0, 10, 8, 0, 8]]  # the dog covers the whole image
    _, target = CocoInstances(*write(tmp_path, data))[0]
    assert target["masks"][0].sum() == 6 and target["masks"][1].sum() == HEIGHT * WIDTH
    assert (target["semantic"] == 1).all()


def test_the_loader_batches_coco_images_of_different_sizes(tmp_path):
    (images, targets), = InstanceDataLoader(CocoInstances(*write(tmp_path)), batch_size=2)
    assert images.shape == (2, 3, HEIGHT, WIDTH) and targets[1]["masks"].shape == (0, HEIGHT, WIDTH)


def broken(change):
    data = coco_json()
    change(data)
    return data


@pytest.mark.parametrize("change, message", [
    (lambda d: d["images"][1].pop("height"), "image 1 (id 2): has no 'height'"),
    (lambda d: d["annotations"][0].pop("segmentation"), "annotation 0 (id 1): has no 'segmentation'"),
    (lambda d: d.pop("categories"), "'categories' must be a list of objects, got None"),
    (lambda d: d["annotations"][0].update(category_id=4),
     "annotation 0 (id 1): category_id 4 names no category of the file (known: [3, 7])"),
    (lambda d: d["annotations"][0].update(image_id=9), "annotation 0 (id 1): image_id 9 names no image of the file"),
    (lambda d: d["annotations"][0].update(segmentation="abc"),
     "annotation 0 (id 1): segmentation must be polygons (a list) or an RLE dict, got 'abc'"),
    (lambda d: d["annotations"][0].update(segmentation=[[1, 1, 4, 1, 4]]),
     "segmentation must be polygons [[x1, y1, x2, y2, ...], ...] of at least 3 points"),
    (lambda d: d["annotations"][1]["segmentation"].update(size=[10, 8]),
     "segmentation RLE size must be the image's [height, width] = [8, 10], got [10, 8]"),
    (lambda d: d["annotations"][1]["segmentation"]["counts"].append(3),
     "segmentation RLE counts must sum to height x width = 80, got 83"),
    (lambda d: d["annotations"][0].update(iscrowd=2), "annotation 0 (id 1): iscrowd must be 0 or 1, got 2"),
    (lambda d: d["categories"].append({"id": 3, "name": "again"}), "category 2: id 3 is used twice"),
    (lambda d: d["images"][0].update(width=0), "image 0 (id 5): height and width must be integers > 0"),
])
def test_structure_problems_are_reported_at_construction(tmp_path, change, message):
    folder, path = write(tmp_path, broken(change))
    with pytest.raises(DatasetError, match=re.escape(message)) as error:
        CocoInstances(folder, path)
    assert error.value.problems[0].startswith(f"{path}: ") and len(error.value.problems) == 1


def test_every_structure_problem_is_listed_at_once(tmp_path):
    def two(d):
        d["annotations"][0].update(category_id=4)
        d["annotations"][1].update(segmentation=5)
    with pytest.raises(DatasetError, match="2 problems") as error:
        CocoInstances(*write(tmp_path, broken(two)))
    where = [problem.split(": ")[1] for problem in error.value.problems]
    assert where == ["annotation 0 (id 1)", "annotation 1 (id 2)"]


def test_files_that_are_not_coco_are_refused(tmp_path):
    folder, path = write(tmp_path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=f"{path}: is not valid JSON: Expecting property name"):
        CocoInstances(folder, path)
    path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match="must hold a JSON object with 'images', 'annotations' and 'categories', "
                                           "got list"):
        CocoInstances(folder, path)
    with pytest.raises(FileNotFoundError, match="CocoInstances: the annotation file .*nowhere.json does not exist"):
        CocoInstances(folder, tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match="CocoInstances: the image folder .*nowhere does not exist"):
        CocoInstances(tmp_path / "nowhere", path)


def test_image_problems_are_reported_when_the_image_is_read(tmp_path):
    folder, path = write(tmp_path, sizes={"a.png": (HEIGHT, WIDTH + 1)})  # b.png is missing, a.png too wide
    ds = CocoInstances(folder, path)  # the structure is fine: construction reads no image
    with pytest.raises(ValueError, match=re.escape(f"CocoInstances: {folder / 'a.png'}: is 8x11 (height x width) "
                                                   f"but {path} says 8x10")):
        ds[0]
    with pytest.raises(ValueError, match=re.escape(f"CocoInstances: {folder / 'b.png'}: image 5 of {path} has no "
                                                   "such file")):
        ds[1]
    with pytest.raises(DatasetError, match="CocoInstances.check: 2 problems") as error:
        ds.check()
    assert len(error.value.problems) == 2
    (folder / "b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=re.escape(f"CocoInstances: cannot read image {folder / 'b.png'}: ")) as error:
        ds[1]
    assert "\n" not in str(error.value)


def test_a_compressed_rle_that_does_not_decode_is_reported_when_read(tmp_path):
    data = coco_json()
    data["annotations"][2]["segmentation"]["counts"] = "1 1"
    folder, path = write(tmp_path, data)
    ds = CocoInstances(folder, path, include_crowd=True)
    with pytest.raises(ValueError, match=f"CocoInstances: {path}: annotation id 3: segmentation RLE a compressed "
                                         "counts string holds only characters"):
        ds[0]
    data["annotations"][2]["segmentation"]["counts"] = "T3"  # 100 pixels, not 80
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="annotation id 3: segmentation RLE counts must sum to height x width = "
                                           "8 x 10 = 80, got 100"):
        CocoInstances(folder, path, include_crowd=True)[0]


def test_an_annotation_whose_mask_is_empty_is_left_out(tmp_path):
    data = coco_json()
    data["annotations"][0]["segmentation"] = [[1, 1.1, 5, 1.1, 5, 1.3, 1, 1.3]]  # thinner than a pixel: no centre
    _, target = CocoInstances(*write(tmp_path, data))[0]
    np.testing.assert_array_equal(target["labels"], [2])
    assert target["masks"].shape == (1, HEIGHT, WIDTH) and target["boxes"].shape == (1, 4)
