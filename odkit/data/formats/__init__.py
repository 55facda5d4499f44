"""COCO json, Pascal VOC and YOLO txt readers and writers (filled in by the formats module)."""
