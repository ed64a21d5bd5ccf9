"""Evaluators: training and evaluation of discrete networks, and the distillation ground truth of a space."""

from .ground_truth import (GroundTruthConfig, build_ground_truth, merge_shards, parse_shard, read_records,
                           shard_indices)
from .trainer import TrainConfig, evaluate, train_network

__all__ = ["GroundTruthConfig", "TrainConfig", "build_ground_truth", "evaluate", "merge_shards", "parse_shard",
           "read_records", "shard_indices", "train_network"]
