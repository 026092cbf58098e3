"""Detection data sets and the two file formats people have: COCO JSON and Pascal VOC XML.

    train = read_coco_json("annotations/instances_train.json", image_dir="train2017")
    train = read_voc("VOCdevkit/VOC2012", split="train")
    image = train.load_image(0)                  # uint8 (H, W, C)
    boxes, labels = train.targets(0)             # (M, 4) x1 y1 x2 y2, (M,) class indices

Both readers give a ``DetectionDataset``: one record per image (its id, file, size, boxes
and labels), the class names, and the COCO category id of each class, so that
detections can be written back as COCO JSON (``to_coco``) and scored by ``evaluate_coco``.

What the readers do with doubtful input (checked when the file is read, never later)
-------------------------------------------------------------------------------------
* an image with no objects: valid, all background;
* a box reaching beyond its image: clipped to the image (annotation tools round
  outwards; VOC's 1-based pixel indices end at the width);
* a box with zero or negative width or height, or one lying wholly outside its image
  (nothing left after clipping): ValueError naming the annotation;
* an unknown category id (COCO) or a class name not in ``classes`` (VOC): ValueError;
* an annotation whose image is not in the file's ``images``, an image file that is
  missing, or an image whose pixels differ in size from its declared width and height
  (the annotation file does not match the images): ValueError naming the image;
* COCO ``iscrowd`` regions and VOC ``difficult`` objects are kept as *ignore regions*:
  written back to COCO JSON (as ``iscrowd``, so evaluation ignores them, as COCO and
  VOC do) but not used as training targets.

Coordinates are continuous pixels, (x1, y1, x2, y2) with x2 − x1 the width. COCO's
``bbox`` is [x, y, width, height]; VOC's ``bndbox`` holds 1-based inclusive pixel
indices, so pixel column ``xmin`` starts at x = xmin − 1 and ``xmax`` ends at x = xmax.
"""
import json
import os
import xml.etree.ElementTree as ElementTree

import numpy as np


class DetectionDataset:
    """Images with boxes: ``records`` (one dict per image), ``classes`` (names) and
    ``category_ids`` (the COCO id of each class index).

    A record holds ``image_id``, ``file_name``, ``width``, ``height``, ``boxes`` (M, 4),
    ``labels`` (M,) class indices and ``ignore`` (M,) booleans (crowd / difficult).
    """

    def __init__(self, records, classes, category_ids, name="detection", image_root=None,
                 channels=3):
        self.records, self.classes = list(records), tuple(classes)
        self.category_ids = tuple(int(c) for c in category_ids)
        self.name, self.image_root, self.channels = name, image_root, channels
        if len(self.classes) != len(self.category_ids):
            raise ValueError(f"{name}: {len(self.classes)} class names but "
                             f"{len(self.category_ids)} category ids")

    def __len__(self):
        return len(self.records)

    def __repr__(self):
        objects = sum(len(r["labels"]) for r in self.records)
        return (f"DetectionDataset({self.name!r}, {len(self)} images, {objects} objects, "
                f"{len(self.classes)} classes)")

    def targets(self, index):
        """The boxes and labels training learns from (ignore regions left out)."""
        record = self.records[index]
        keep = ~record["ignore"]
        return record["boxes"][keep], record["labels"][keep]

    def image_path(self, index):
        return os.path.join(self.image_root or "", self.records[index]["file_name"])

    def load_image(self, index):
        """The image as uint8 (height, width, channels), checked against its record."""
        record = self.records[index]
        image = read_image(self.image_path(index), self.channels)
        if image.shape[:2] != (record["height"], record["width"]):
            raise ValueError(f"{self.name}: image {record['file_name']} is "
                             f"{image.shape[1]}×{image.shape[0]} pixels but the annotations "
                             f"say {record['width']}×{record['height']}: the annotation file "
                             f"does not match the images")
        return image

    def check_images_exist(self):
        """A ValueError listing image files the annotations name but the folder lacks."""
        missing = [r["file_name"] for i, r in enumerate(self.records)
                   if not os.path.isfile(self.image_path(i))]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise ValueError(f"{self.name}: {len(missing)} of {len(self)} images named by the "
                             f"annotations are missing from {self.image_root}: {shown}")

    def to_coco(self):
        """The ground truth as a COCO instances dict (ignore regions as ``iscrowd``)."""
        images, annotations = [], []
        for record in self.records:
            images.append({"id": record["image_id"], "file_name": record["file_name"],
                           "width": record["width"], "height": record["height"]})
            for box, label, ignore in zip(record["boxes"], record["labels"], record["ignore"]):
                x1, y1, x2, y2 = (float(v) for v in box)
                annotations.append({"id": len(annotations) + 1,    # COCO ids start at 1
                                    "image_id": record["image_id"],
                                    "category_id": self.category_ids[int(label)],
                                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                                    "area": (x2 - x1) * (y2 - y1), "iscrowd": int(ignore)})
        categories = [{"id": c, "name": name} for c, name in zip(self.category_ids, self.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}


def read_image(path, channels=3):
    """uint8 (H, W, channels) pixels of a PNG/JPEG (needs pillow, the ``images`` extra)."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading images needs pillow: pip install 'minicnn[images]'") from None
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        pixels = np.asarray(image, dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _checked_box(x1, y1, x2, y2, width, height, where):
    """The box clipped to the image, or a ValueError when it is empty or outside."""
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"{where}: box (x1, y1, x2, y2) = ({x1:g}, {y1:g}, {x2:g}, {y2:g}) "
                         f"has zero area or is inverted")
    clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height)))
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        raise ValueError(f"{where}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside its "
                         f"{width}×{height} image")
    return clipped


def make_record(image_id, file_name, width, height, boxes, labels, ignore):
    return {"image_id": image_id, "file_name": file_name, "width": int(width),
            "height": int(height), "boxes": np.array(boxes, dtype=np.float64).reshape(-1, 4),
            "labels": np.array(labels, dtype=np.int64), "ignore": np.array(ignore, dtype=bool)}


# ----------------------------------------------------------------------------- COCO JSON

def read_coco_json(path, image_dir=None, check_images=True):
    """A ``DetectionDataset`` from a COCO instances file (see the module doc for checks).

    ``image_dir`` defaults to the folder holding the JSON file. Classes are the file's
    categories in increasing id order; class index i stands for ``category_ids[i]``.
    """
    with open(path) as file:
        try:
            data = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
    where = os.fspath(path)
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise ValueError(f"{where}: expected a COCO instances file, a JSON object with "
                         f"'images', 'annotations' and 'categories'")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    label_of = {c["id"]: index for index, c in enumerate(categories)}
    images = {}
    for image in data["images"]:
        missing = {"id", "file_name", "width", "height"} - set(image)
        if missing:
            raise ValueError(f"{where}: image entry {image} lacks {sorted(missing)}")
        images[image["id"]] = image
    objects = {image_id: [] for image_id in images}
    for annotation in data["annotations"]:
        name = f"{where}: annotation {annotation.get('id')}"
        if annotation.get("image_id") not in images:
            raise ValueError(f"{name} refers to image_id {annotation.get('image_id')!r}, which "
                             f"is not among the file's {len(images)} images")
        if annotation.get("category_id") not in label_of:
            raise ValueError(f"{name} has category_id {annotation.get('category_id')!r}; the "
                             f"file's categories are {sorted(label_of)}")
        image = images[annotation["image_id"]]
        x, y, w, h = (float(v) for v in annotation["bbox"])
        box = _checked_box(x, y, x + w, y + h, image["width"], image["height"],
                           f"{name} (image {image['file_name']})")
        objects[image["id"]].append((box, label_of[annotation["category_id"]],
                                     bool(annotation.get("iscrowd", 0))))
    records = [make_record(image_id, image["file_name"], image["width"], image["height"],
                       [o[0] for o in objects[image_id]], [o[1] for o in objects[image_id]],
                       [o[2] for o in objects[image_id]])
               for image_id, image in images.items()]
    dataset = DetectionDataset(records, [str(c.get("name", c["id"])) for c in categories],
                               [c["id"] for c in categories], name=where,
                               image_root=image_dir or os.path.dirname(os.path.abspath(path)))
    if check_images:
        dataset.check_images_exist()
    return dataset


# ----------------------------------------------------------------------------- Pascal VOC

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")


def _text(element, tag, where):
    found = element.find(tag)
    if found is None or found.text is None:
        raise ValueError(f"{where}: missing <{tag}>")
    return found.text.strip()


def read_voc_annotation(path):
    """(file name, width, height, [(class name, (x1, y1, x2, y2), difficult)]) of one XML."""
    where = os.fspath(path)
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise ValueError(f"{where}: not valid XML ({error})") from None
    size = root.find("size")
    if size is None:
        raise ValueError(f"{where}: missing <size>")
    width = int(float(_text(size, "width", where)))
    height = int(float(_text(size, "height", where)))
    objects = []
    for number, element in enumerate(root.findall("object"), 1):
        name = _text(element, "name", where)
        box = element.find("bndbox")
        if box is None:
            raise ValueError(f"{where}: object {number} ({name}) has no <bndbox>")
        xmin, ymin, xmax, ymax = (float(_text(box, tag, where))
                                  for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult = element.find("difficult")
        objects.append((name, (xmin - 1, ymin - 1, xmax, ymax),
                        difficult is not None and (difficult.text or "0").strip() == "1"))
    return _text(root, "filename", where), width, height, objects


def read_voc(folder, split=None, classes=VOC_CLASSES, check_images=True):
    """A ``DetectionDataset`` from a Pascal VOC folder: ``Annotations/*.xml`` and
    ``JPEGImages/``; ``split`` picks the ids in ``ImageSets/Main/<split>.txt`` (all XML
    files when None). ``classes=None`` takes the sorted names that occur."""
    annotations = os.path.join(folder, "Annotations")
    if not os.path.isdir(annotations):
        raise ValueError(f"{folder}: not a Pascal VOC folder (no Annotations/ inside)")
    if split is None:
        stems = sorted(os.path.splitext(f)[0] for f in os.listdir(annotations)
                       if f.endswith(".xml"))
    else:
        listing = os.path.join(folder, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(listing):
            raise ValueError(f"{folder}: split {split!r} needs {listing}, which does not exist")
        with open(listing) as file:
            stems = [line.split()[0] for line in file if line.strip()]
    parsed = []
    for stem in stems:
        path = os.path.join(annotations, stem + ".xml")
        if not os.path.isfile(path):
            raise ValueError(f"{folder}: image {stem} is listed but {path} does not exist")
        parsed.append((path, read_voc_annotation(path)))
    if classes is None:
        classes = sorted({name for _, (_, _, _, objects) in parsed for name, _, _ in objects})
    label_of = {name: index for index, name in enumerate(classes)}
    records = []
    for image_id, (path, (file_name, width, height, objects)) in enumerate(parsed, 1):
        boxes, labels, ignore = [], [], []
        for number, (name, box, difficult) in enumerate(objects, 1):
            where = f"{path}: object {number}"
            if name not in label_of:
                raise ValueError(f"{where} is a {name!r}, not one of the classes "
                                 f"{', '.join(classes)}")
            boxes.append(_checked_box(*box, width, height, where))
            labels.append(label_of[name])
            ignore.append(difficult)
        records.append(make_record(image_id, file_name, width, height, boxes, labels, ignore))
    dataset = DetectionDataset(records, classes, range(1, len(classes) + 1), name=os.fspath(folder),
                               image_root=os.path.join(folder, "JPEGImages"))
    if check_images:
        dataset.check_images_exist()
    return dataset
