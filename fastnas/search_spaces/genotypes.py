"""Published cells of the DARTS space, by name: ``load_genotype("DARTS_V2")`` wherever a genotype file is accepted.

The authors' repositories write a cell as DARTS does (quark0/darts cnn/genotypes.py):
``Genotype(normal=[(op, input), ...], normal_concat=range(2, 6), reduce=..., reduce_concat=...)``, a flat
list of 8 pairs, two per intermediate node (node j = pairs 2j and 2j + 1), inputs numbered 0 and 1 for the
cell's inputs (0: the cell two back, 1: the previous cell) and 2 + j for node j, and the four nodes
concatenated. fastnas's Genotype groups the same pairs per node, with the same input numbers, and
concatenates every non-empty node: ``from_reference`` converts one into the other.

Each entry cites the file it comes from and the parameter counts its paper reports (millions, rounded to
0.1M: CIFAR-10 at C = 36, 20 cells, 10 classes; ImageNet mobile setting at C = 48, 14 cells, 1000
classes; auxiliary heads excluded). tests/test_genotypes.py checks fastnas's networks against them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .darts import Edge, Genotype

NODES = 4


def from_reference(normal: list[Edge], reduce: list[Edge], meta: dict | None = None,
                   normal_concat: range | list[int] = range(2, 6),
                   reduce_concat: range | list[int] = range(2, 6)) -> Genotype:
    """The fastnas Genotype of a cell written as the DARTS code writes it (see the module docstring)."""
    for name, pairs, concat in (("normal", normal, normal_concat), ("reduce", reduce, reduce_concat)):
        if len(pairs) != 2 * NODES or list(concat) != list(range(2, 2 + NODES)):
            raise ValueError(f"{name}: expected {2 * NODES} (op, input) pairs concatenated over nodes 2..{1 + NODES}"
                             f", got {len(pairs)} pairs and concat {list(concat)}")

    def per_node(pairs: list[Edge]) -> list[list[Edge]]:
        return [[tuple(pair) for pair in pairs[2 * j: 2 * j + 2]] for j in range(NODES)]
    return Genotype(normal=per_node(normal), reduce=per_node(reduce), meta=dict(meta or {}))


@dataclass(frozen=True)
class PublishedCell:
    """A published genotype, where it comes from, and the parameter counts its paper reports (millions)."""

    genotype: Genotype
    source: str
    paper: str
    cifar10_params_m: float | None = None
    imagenet_params_m: float | None = None


def _published(normal: list[Edge], reduce: list[Edge], source: str, paper: str,
               cifar10_params_m: float | None = None, imagenet_params_m: float | None = None) -> PublishedCell:
    genotype = from_reference(normal, reduce, meta={"source": source, "paper": paper})
    return PublishedCell(genotype, source, paper, cifar10_params_m, imagenet_params_m)


DARTS_PAPER = "DARTS (Liu et al., ICLR 2019, arXiv 1806.09055)"

GENOTYPES: dict[str, PublishedCell] = {
    # First-order DARTS. Table 1 of the paper gives 3.3M params for "DARTS (first order) + cutout"; this cell
    # builds 3,169,414 (3.2M) as the reference code counts (tests/test_genotypes.py): the paper's figure is
    # not this cell's count.
    "DARTS_V1": _published(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
        "quark0/darts cnn/genotypes.py DARTS_V1 (the same in yuhuixu1993/PC-DARTS and chenxin061/pdarts genotypes.py)",
        DARTS_PAPER, cifar10_params_m=3.3),
    # Second-order DARTS, the cell of the paper's CIFAR-10 (3.3M) and ImageNet (4.7M) results.
    "DARTS_V2": _published(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
        "quark0/darts cnn/genotypes.py DARTS_V2 (the same in yuhuixu1993/PC-DARTS and chenxin061/pdarts genotypes.py)",
        DARTS_PAPER, cifar10_params_m=3.3, imagenet_params_m=4.7),
    # Searched on CIFAR-10; the paper also transfers it to ImageNet (5.3M).
    "PC_DARTS": _published(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
        "yuhuixu1993/PC-DARTS genotypes.py PC_DARTS_cifar", "PC-DARTS (Xu et al., ICLR 2020, arXiv 1907.05737)",
        cifar10_params_m=3.6, imagenet_params_m=5.3),
    # Searched on ImageNet directly (5.3M there).
    "PC_DARTS_IMAGENET": _published(
        [("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
        [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
         ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
        "yuhuixu1993/PC-DARTS genotypes.py PC_DARTS_image", "PC-DARTS (Xu et al., ICLR 2020, arXiv 1907.05737)",
        imagenet_params_m=5.3),
    "PDARTS": _published(
        [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)],
        "chenxin061/pdarts genotypes.py PDARTS", "P-DARTS (Chen et al., ICCV 2019, arXiv 1904.12760)",
        cifar10_params_m=3.4, imagenet_params_m=4.9),
}


def _key(name: str) -> str:
    return name.strip().upper().replace("-", "_")


def load_genotype(name_or_path: str | Path) -> Genotype:
    """A registered genotype by name (case and '-'/'_' ignored: "DARTS_V2", "pc-darts") or a genotype JSON file.

    A name returns a fresh copy (changing its meta changes no other caller's). Raises FileNotFoundError for a
    path that does not exist, ValueError for a file that is not a genotype or a name that is not registered.
    """
    text = str(name_or_path)
    if _key(text) in GENOTYPES:
        return Genotype.from_json(GENOTYPES[_key(text)].genotype.to_json())
    path = Path(text).expanduser()
    if path.is_file() or path.suffix == ".json" or len(path.parts) > 1:
        return Genotype.load(path)
    raise ValueError(f"genotype: {text!r} is neither a registered genotype ({', '.join(GENOTYPES)}) "
                     "nor a genotype file")
