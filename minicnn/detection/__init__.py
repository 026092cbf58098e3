"""Object detection, piece by piece (EfficientDet: Tan, Pang & Le, 2020).

    anchors.py          the fixed boxes on levels P3–P7 and their order
    boxes.py            IoU, the anchor-relative box coding, matching anchors to objects
    losses.py           sigmoid focal loss and Huber box loss (differentiable Functions)
    nms.py              non-maximum suppression, per class, and post-processing to top-k
    coco_eval.py        COCO mAP, written to be read
    formats.py          COCO JSON and Pascal VOC XML readers
    mnist_detection.py  an offline detection task: MNIST digits scattered on canvases
    train.py            the training / evaluation / prediction command
"""
from minicnn.detection.anchors import (generate_anchors, anchor_count, feature_shapes,
                                       check_image_size, ANCHORS_PER_CELL)
from minicnn.detection.boxes import (box_area, box_iou, encode, decode, clip_boxes,
                                     match_anchors, BACKGROUND, IGNORED)
from minicnn.detection.losses import (focal_loss, box_loss, detection_loss,
                                      flatten_level_outputs)
from minicnn.detection.nms import nms, batched_nms, postprocess
from minicnn.detection.coco_eval import evaluate_coco
from minicnn.detection.formats import DetectionDataset, read_coco_json, read_voc
from minicnn.detection.mnist_detection import mnist_detection, write_coco
