"""CamVid's classes and colours, and fastai's folder layout (``codes.txt``, ``images/``, ``labels/``).

Kept apart from ``layouts`` because ``SegmentationDataset(root)``, the one-argument form, reads fastai's
layout itself: both ``dataset`` and ``layouts`` import this module, and it imports neither.
"""
from pathlib import Path

import numpy as np

from .images import read_codes

__all__ = ["CAMVID_CLASSES", "CAMVID_COLORS", "fastai_layout"]

# CamVid's 32 classes (fastai's codes.txt order, alphabetical) and their colours from label_colors.txt.
CAMVID_CLASSES = [
    "Animal", "Archway", "Bicyclist", "Bridge", "Building", "Car", "CartLuggagePram", "Child", "Column_Pole",
    "Fence", "LaneMkgsDriv", "LaneMkgsNonDriv", "Misc_Text", "MotorcycleScooter", "OtherMoving", "ParkingBlock",
    "Pedestrian", "Road", "RoadShoulder", "Sidewalk", "SignSymbol", "Sky", "SUVPickupTruck", "TrafficCone",
    "TrafficLight", "Train", "Tree", "Truck_Bus", "Tunnel", "VegetationMisc", "Void", "Wall"]
CAMVID_COLORS = np.array([
    (64, 128, 64), (192, 0, 128), (0, 128, 192), (0, 128, 64), (128, 0, 0), (64, 0, 128),
    (64, 0, 192), (192, 128, 64), (192, 192, 128), (64, 64, 128), (128, 0, 192), (192, 0, 64),
    (128, 128, 64), (192, 0, 192), (128, 64, 64), (64, 192, 128), (64, 64, 0), (128, 64, 128),
    (128, 128, 192), (0, 0, 192), (192, 128, 128), (128, 128, 128), (64, 128, 192), (0, 0, 64),
    (0, 64, 64), (192, 64, 128), (128, 128, 0), (192, 128, 192), (64, 0, 64), (192, 192, 0),
    (0, 0, 0), (64, 192, 0),
], dtype=np.uint8)


def fastai_layout(root):
    """The keyword arguments of fastai's layout (what the one-argument SegmentationDataset(root) uses)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"SegmentationDataset: the dataset folder {root} does not exist")
    classes = read_codes(root / "codes.txt")
    return dict(image_folder=root / "images", mask_folder=root / "labels", classes=classes,
                mask_name="{stem}_P.png", class_colors=CAMVID_COLORS if classes == CAMVID_CLASSES else None)
