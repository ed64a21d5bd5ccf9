"""Parameter, FLOP and saved-activation counts, shared by every search space, command and benchmark."""

from __future__ import annotations

import weakref
from typing import Callable

import torch
import torch.nn as nn

from . import mixed


def count_params(module: nn.Module) -> int:
    """Trainable and frozen parameters of `module` (pruned operators are gone, so not counted)."""
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass on a single input of `input_shape` (C, H, W).

    Counts Conv2d and Linear layers, the usual convention of NAS papers ("FLOPs"
    there are MACs); pooling, BN and activations are left out.
    """
    return sum(layer_flops(module, input_shape).values())


def layer_flops(module: nn.Module, input_shape: tuple[int, ...]) -> dict[nn.Module, int]:
    """count_flops per layer: each Conv2d and Linear layer of `module` -> its MACs in one forward pass on a
    single input of `input_shape` (C, H, W), summed over the layer's calls (0 for a layer not called)."""
    macs: dict[nn.Module, int] = {}

    def conv_hook(layer: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        kernel_macs = layer.in_channels // layer.groups * layer.kernel_size[0] * layer.kernel_size[1]
        macs[layer] += output.numel() // output.shape[0] * kernel_macs

    def linear_hook(layer: nn.Linear, _inputs, output: torch.Tensor) -> None:
        macs[layer] += output.numel() // output.shape[0] * layer.in_features

    handles = []
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            handles.append(layer.register_forward_hook(conv_hook))
        elif isinstance(layer, nn.Linear):
            handles.append(layer.register_forward_hook(linear_hook))
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            macs[layer] = 0
    # a grouped node calls no Conv2d module (fastnas.nn.grouped): count with every candidate called on its own
    grouped = [node for node in module.modules() if isinstance(node, mixed.MixedNode) and node.group_operators]
    was_training = module.training
    try:
        for node in grouped:
            node.group_operators = False
        module.eval()
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad():
            module(torch.zeros(1, *input_shape, device=device))
    finally:
        module.train(was_training)
        for node in grouped:
            node.group_operators = True
        for handle in handles:
            handle.remove()
    return macs


class PrunedFlops:
    """count_flops(module, input_shape) of a network that only loses layers (a super-network as it is pruned),
    without a forward pass per count: the layers' MACs are measured once, then summed over the layers still in
    the network.

    Exact while no remaining layer's input shape changes, which pruning never does. A Conv2d or Linear layer
    that was not there at the measurement makes it measure again.
    """

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...]):
        self.module, self.input_shape = module, input_shape
        # weak keys: a pruned layer's tensors are freed with it
        self._macs = weakref.WeakKeyDictionary(layer_flops(module, input_shape))

    def __call__(self) -> int:
        layers = [layer for layer in self.module.modules() if isinstance(layer, (nn.Conv2d, nn.Linear))]
        if any(layer not in self._macs for layer in layers):
            self._macs = weakref.WeakKeyDictionary(layer_flops(self.module, self.input_shape))
        return sum(self._macs[layer] for layer in layers)


def count_saved_bytes(loss_fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct storages autograd keeps for backward while `loss_fn()` builds its graph.

    Runs the backward too (freeing them). Counts what MixedNode's own saved-tensor hook keeps for
    mixed_node (operator outputs, or the BatchNorm inputs and statistics that rebuild them) through
    fastnas.nn.mixed.saved_tensor_observers: that inner hook hides those saves from this one.
    Parameters count too (a convolution saves its weight); they are the same in any two variants.
    """
    storages: dict[int, int] = {}

    def count(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    mixed.saved_tensor_observers.append(count)
    try:
        with torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
            loss = loss_fn()
    finally:
        mixed.saved_tensor_observers.remove(count)
    loss.backward()
    return sum(storages.values())
