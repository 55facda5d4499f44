"""Datasets: the shared in-memory representation, format readers/writers, validation, loading."""

from odkit.data.structures import AnnotationSet, ImageRecord, Problem

__all__ = ["AnnotationSet", "ImageRecord", "Problem"]
