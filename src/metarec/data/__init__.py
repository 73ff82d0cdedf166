"""Datasets, cleaning and evaluation splits."""

from metarec.data.schema import Dataset
from metarec.data.sources import load_dataset

__all__ = ["Dataset", "load_dataset"]
