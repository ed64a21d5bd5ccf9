"""Evaluators: training and evaluation of discrete networks."""

from .trainer import TrainConfig, evaluate, train_network

__all__ = ["TrainConfig", "evaluate", "train_network"]
