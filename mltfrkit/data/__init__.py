"""Datasets: readers for raw formats, a registry of named datasets, leave-one-out splits, item titles."""

from mltfrkit.data.readers import MalformedInputError, read_any
from mltfrkit.data.registry import DATASETS, DatasetNotFoundError, dataset_names, load_dataset
from mltfrkit.data.split import EmptyDatasetError, PrepSettings, SplitData, prepare_split
from mltfrkit.data.text import ItemText, NoTitlesError, item_titles

__all__ = ["DATASETS", "DatasetNotFoundError", "EmptyDatasetError", "ItemText", "MalformedInputError",
           "NoTitlesError", "PrepSettings", "SplitData", "dataset_names", "item_titles", "load_dataset",
           "prepare_split", "read_any"]
