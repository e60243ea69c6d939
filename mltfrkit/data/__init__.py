"""Datasets: readers for raw formats, a registry of named datasets, leave-one-out splits."""

from mltfrkit.data.readers import MalformedInputError, read_any
from mltfrkit.data.registry import DATASETS, DatasetNotFoundError, dataset_names, load_dataset
from mltfrkit.data.split import EmptyDatasetError, PrepSettings, SplitData, prepare_split

__all__ = ["DATASETS", "DatasetNotFoundError", "EmptyDatasetError", "MalformedInputError", "PrepSettings",
           "SplitData", "dataset_names", "load_dataset", "prepare_split", "read_any"]
