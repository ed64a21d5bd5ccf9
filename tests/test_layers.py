"""The layering of docs/design.md holds: no fastnas module imports one of a higher layer."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fastnas"

# Layer of each top-level part of fastnas (docs/design.md, "Layers"): a module may import parts of its own layer
# or below. data, runs, distributed, pareto and presets are helpers every layer may use; plots draws genotypes
# (layer 3). A new top-level module needs a line here (test_every_part_has_a_layer).
LAYER = {
    "_C": 0, "ops": 0, "data": 0, "runs": 0, "distributed": 0, "pareto": 0, "presets": 0,
    "nn": 1, "benchmarks": 1,
    "distill": 2,
    "search_spaces": 3, "plots": 3,
    "proxies": 4,
    "evaluators": 5, "nasbench": 5,
    "strategies": 6,
    "cli": 7, "__main__": 7,
}


def part_of(module: Path) -> str:
    """'nn' for fastnas/nn/mixed.py, 'runs' for fastnas/runs.py."""
    relative = module.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_parts(module: Path) -> set[str]:
    """The top-level parts of fastnas that `module` imports (absolute `fastnas.x` or relative imports)."""
    package = module.relative_to(PACKAGE.parent).parts[:-1]  # ('fastnas', 'nn') for nn/mixed.py and nn/__init__.py
    parts = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[:len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if len(target) == 1 else [target]
            else:
                names = [(node.module or "").split(".")]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        parts.update(name[1] for name in names if name[0] == "fastnas" and len(name) > 1)
    return parts


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


def test_every_part_has_a_layer():
    assert {part_of(m) for m in MODULES} <= set(LAYER)


@pytest.mark.parametrize("module", MODULES, ids=[str(m.relative_to(PACKAGE)) for m in MODULES])
def test_no_module_imports_a_higher_layer(module):
    own = part_of(module)
    higher = {part for part in imported_parts(module) if part in LAYER and LAYER[part] > LAYER[own]}
    assert not higher, f"{module.relative_to(PACKAGE)} (layer {LAYER[own]}) imports {higher}"


def test_the_import_reader_on_known_modules():
    assert imported_parts(PACKAGE / "nn" / "mixed.py") == {"ops", "nn"}  # ..ops and .darts_ops
    assert imported_parts(PACKAGE / "cli" / "train.py") >= {"data", "distill", "evaluators", "nn", "runs",
                                                            "search_spaces", "cli"}
    assert "ops" in imported_parts(PACKAGE / "runs.py")  # `from . import ops` inside a method
