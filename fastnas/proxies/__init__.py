"""Training-free proxies: the tensors they read (`inputs`), the registry, the baselines and Auto-DAS programs."""

from .inputs import NetworkOutputs, ProxyInputs, collect, network_outputs
from .program import Program, score_population
from .registry import Proxy, available_proxies, get_proxy, register_proxy, score, score_many
from . import baselines, released  # noqa: E402,F401  (register the baselines and the Auto-DAS programs)

__all__ = ["NetworkOutputs", "ProxyInputs", "collect", "network_outputs",
           "Program", "Proxy", "available_proxies", "get_proxy", "register_proxy", "score", "score_many",
           "score_population"]
