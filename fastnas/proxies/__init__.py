"""Training-free proxies: the tensors they read (`inputs`), the registered baselines and Auto-DAS programs."""

from .inputs import NetworkOutputs, ProxyInputs, collect, network_outputs

__all__ = ["NetworkOutputs", "ProxyInputs", "collect", "network_outputs"]
