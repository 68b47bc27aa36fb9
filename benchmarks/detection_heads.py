"""minseg's detector heads against torchvision.models.detection: same inputs and weights, same numbers out.

    python benchmarks/detection_heads.py

Each row feeds one random case to minseg and to torchvision and prints the largest absolute difference:
the losses and their gradients (binary cross-entropy with logits, smooth L1 at beta 1/9), the Matcher with and
without low-quality matches, the RPN head with copied weights and its proposal filter, ``fastrcnn_loss``,
``maskrcnn_loss``, the box head's inference filter, and mask pasting. Pasting is the one expected to differ a
little: torchvision rounds each (padded) box to whole pixels before resizing the mask, minseg does not. The
sampler is random in both libraries and is compared by its counts in tests/test_matcher.py. Needs torch and
torchvision (imported only here, never by minseg).
"""
import numpy as np
import torch
import torch.nn.functional as torch_F
from torchvision.models.detection import _utils as tv_utils
from torchvision.models.detection import roi_heads as tv_roi_heads
from torchvision.models.detection import rpn as tv_rpn

import minseg
from minseg import Tensor
from minseg.detection import (
    Matcher,
    RegionProposalNetwork,
    RoIHeads,
    RPNHead,
    fastrcnn_loss,
    maskrcnn_loss,
    paste_masks_in_image,
)
from minseg.functional import binary_cross_entropy_with_logits, smooth_l1_loss

RNG = np.random.default_rng(0)


def report(name, ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        print(f"{name:<46} SHAPES DIFFER {ours.shape} vs {theirs.shape}")
        return
    difference = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    print(f"{name:<46} max |diff| {difference:.2e}   ({ours.size} values)")


def random_boxes(count, size=64):
    corners = RNG.uniform(0, size - 8, (count, 2))
    extent = RNG.uniform(4, 30, (count, 2))
    return np.concatenate([corners, corners + extent], axis=1).astype(np.float32)


def losses():
    x, t = RNG.standard_normal((40,)) * 3, RNG.random(40).round()
    xt = Tensor(x, requires_grad=True)
    ours = binary_cross_entropy_with_logits(xt, t)
    ours.backward()
    xtorch = torch.tensor(x, requires_grad=True)
    theirs = torch_F.binary_cross_entropy_with_logits(xtorch, torch.tensor(t))
    theirs.backward()
    report("binary_cross_entropy_with_logits (value)", ours.item(), theirs.item())
    report("binary_cross_entropy_with_logits (gradient)", xt.grad, xtorch.grad)
    d, t = RNG.standard_normal((40, 4)) * 0.2, RNG.standard_normal((40, 4)) * 0.2
    xt = Tensor(d, requires_grad=True)
    ours = smooth_l1_loss(xt, t, reduction="sum", beta=1 / 9)
    ours.backward()
    xtorch = torch.tensor(d, requires_grad=True)
    theirs = torch_F.smooth_l1_loss(xtorch, torch.tensor(t), reduction="sum", beta=1 / 9)
    theirs.backward()
    report("smooth_l1_loss beta 1/9 (value)", ours.item(), theirs.item())
    report("smooth_l1_loss beta 1/9 (gradient)", xt.grad, xtorch.grad)


def matcher():
    iou = RNG.random((5, 300)) * RNG.random((5, 1))
    for low_quality in (False, True):
        ours = Matcher(0.7, 0.3, low_quality)(iou)
        theirs = tv_utils.Matcher(0.7, 0.3, low_quality)(torch.tensor(iou))
        report(f"Matcher(0.7, 0.3, allow_low_quality={low_quality})", ours, theirs.numpy())


def rpn():
    features = [RNG.standard_normal((2, 8, 16, 16)).astype(np.float32),
                RNG.standard_normal((2, 8, 8, 8)).astype(np.float32)]
    ours_head = RPNHead(8, 3)
    theirs_head = tv_rpn.RPNHead(8, 3)
    with torch.no_grad():
        theirs_head.conv[0][0].weight.copy_(torch.tensor(ours_head.conv[0].weight.numpy()))
        theirs_head.conv[0][0].bias.copy_(torch.tensor(ours_head.conv[0].bias.numpy()))
        for name in ("cls_logits", "bbox_pred"):
            getattr(theirs_head, name).weight.copy_(torch.tensor(getattr(ours_head, name).weight.numpy()))
            getattr(theirs_head, name).bias.copy_(torch.tensor(getattr(ours_head, name).bias.numpy()))
    ours_objectness, ours_deltas = ours_head([Tensor(f) for f in features])
    theirs_objectness, theirs_deltas = theirs_head([torch.tensor(f) for f in features])
    report("RPNHead objectness", np.concatenate([o.numpy().ravel() for o in ours_objectness]),
           np.concatenate([o.detach().numpy().ravel() for o in theirs_objectness]))
    report("RPNHead deltas", np.concatenate([o.numpy().ravel() for o in ours_deltas]),
           np.concatenate([o.detach().numpy().ravel() for o in theirs_deltas]))

    counts = [600, 150]
    proposals = [random_boxes(sum(counts)) for _ in range(2)]
    logits = RNG.standard_normal((2, sum(counts))).astype(np.float32)
    settings = dict(pre_nms_top_n=dict(training=200, testing=100), post_nms_top_n=dict(training=80, testing=50),
                    nms_thresh=0.7, score_thresh=0.1)
    ours = RegionProposalNetwork(None, ours_head, **settings).eval()
    theirs = tv_rpn.RegionProposalNetwork(None, theirs_head, 0.7, 0.3, 256, 0.5, **settings).eval()
    ours_boxes, ours_scores = ours.filter_proposals(proposals, logits, (64, 64), counts)
    theirs_boxes, theirs_scores = theirs.filter_proposals(torch.tensor(np.stack(proposals)), torch.tensor(logits),
                                                          [(64, 64)] * 2, counts)
    for i in range(2):
        report(f"RPN filter_proposals, image {i} boxes", ours_boxes[i], theirs_boxes[i].numpy())
        report(f"RPN filter_proposals, image {i} scores", ours_scores[i], theirs_scores[i].numpy())


def box_and_mask_losses():
    k, num_classes = 12, 4
    logits, regression = RNG.standard_normal((k, num_classes)), RNG.standard_normal((k, 4 * num_classes))
    labels = [RNG.integers(0, num_classes, 7), RNG.integers(0, num_classes, 5)]
    targets = [RNG.standard_normal((7, 4)), RNG.standard_normal((5, 4))]
    ours = fastrcnn_loss(Tensor(logits), Tensor(regression), labels, targets)
    theirs = tv_roi_heads.fastrcnn_loss(torch.tensor(logits), torch.tensor(regression),
                                        [torch.tensor(v) for v in labels], [torch.tensor(v) for v in targets])
    report("fastrcnn_loss (classifier, box_reg)", [o.item() for o in ours], [t.item() for t in theirs])

    masks = (RNG.random((3, 48, 48)) > 0.4).astype(np.uint8)
    proposals = [random_boxes(6, 48)]
    matched, gt_labels = [RNG.integers(0, 3, 6)], [np.array([1, 3, 2])]
    mask_logits = RNG.standard_normal((6, num_classes, 14, 14)).astype(np.float32)
    ours = maskrcnn_loss(Tensor(mask_logits), proposals, [masks], gt_labels, matched)
    theirs = tv_roi_heads.maskrcnn_loss(torch.tensor(mask_logits), [torch.tensor(p) for p in proposals],
                                        [torch.tensor(masks)], [torch.tensor(gt_labels[0])],
                                        [torch.tensor(matched[0])])
    report("maskrcnn_loss", ours.item(), theirs.item())


def postprocess_and_paste():
    k, num_classes = 40, 4
    proposals = [random_boxes(25), random_boxes(15)]
    logits = RNG.standard_normal((k, num_classes)).astype(np.float32) * 2
    regression = RNG.standard_normal((k, 4 * num_classes)).astype(np.float32) * 0.5
    ours = RoIHeads(None, None, None, score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    theirs = tv_roi_heads.RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, None, 0.05, 0.5, 100)
    ours_result = ours.postprocess_detections(Tensor(logits), Tensor(regression), proposals, [(64, 64)] * 2)
    theirs_result = theirs.postprocess_detections(torch.tensor(logits), torch.tensor(regression),
                                                  [torch.tensor(p) for p in proposals], [(64, 64)] * 2)
    for i in range(2):
        for name, a, b in zip(("boxes", "scores", "labels"), ours_result, theirs_result):
            report(f"postprocess_detections, image {i} {name}", a[i], b[i].numpy())

    # Smooth masks (a blob each, as a trained head predicts): with noise, a one-pixel shift would be all one sees.
    rows, cols = np.mgrid[0:28, 0:28]
    centres = RNG.uniform(8, 20, (5, 2))
    masks = np.exp(-((cols - centres[:, :1, None]) ** 2 + (rows - centres[:, 1:, None]) ** 2) / 60)[:, None]
    boxes = np.round(random_boxes(5)).astype(np.float32)
    ours = paste_masks_in_image(masks.astype(np.float32), boxes, (64, 64))
    theirs = tv_roi_heads.paste_masks_in_image(torch.tensor(masks, dtype=torch.float32), torch.tensor(boxes),
                                               (64, 64))[:, 0].numpy()
    report("paste_masks_in_image (box rounding differs)", ours, theirs)
    print(f"{'  mean |diff| of pasting':<46} {np.abs(ours - theirs).mean():.2e}")
    print(f"{'  pixels on other sides of 0.5':<46} {((ours > 0.5) != (theirs > 0.5)).mean():.2%}")


if __name__ == "__main__":
    minseg.manual_seed(0)
    torch.manual_seed(0)
    losses()
    matcher()
    rpn()
    box_and_mask_losses()
    postprocess_and_paste()
