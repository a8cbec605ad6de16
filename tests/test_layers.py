"""No harness module imports a higher layer (top-level, function-level and type-checking imports alike).

The layers are those of the README's architecture section; a new module must be placed in this table.
"""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"

LAYERS = [
    {"errors", "registry", "config", "sampling", "prompts", "data", "store", "folder_lock", "metrics", "manifest", "task"},
    {"grading", "lora", "checkpoint", "method"},
    {"models", "gguf_export", "gguf_lora"},
    {"rollout", "diagnostics"},
    {"evaluate", "artifacts", "tables", "plots", "reported", "report", "regrade"},
    {"compare", "lmeval"},
    {"training"},
    {"cli", "__main__"},
]
# Allowed exceptions, each with its reason.
ALLOWED = {
    ("harness.method", "harness.rollout.episode"),  # the Episode/Step records, for type hints only
    ("harness", "harness.lmeval"),  # the package registers lm-eval's `selfcorrect` model lazily
}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package itself
    return next(i for i, names in enumerate(LAYERS) if parts[1] in names)


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("harness"):
            if node.module == "harness":
                found += [(node.lineno, f"harness.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("harness")]
    return found


def test_every_module_has_a_layer():
    for path in HARNESS.rglob("*.py"):
        module = ".".join(path.relative_to(HARNESS.parent).with_suffix("").parts).removesuffix(".__init__")
        if module != "harness":
            assert any(module.split(".")[1] in names for names in LAYERS), f"{module}: place it in LAYERS"


def test_no_module_imports_a_higher_layer():
    upward = []
    for path in sorted(HARNESS.rglob("*.py")):
        module = ".".join(path.relative_to(HARNESS.parent).with_suffix("").parts).removesuffix(".__init__")
        mine = layer_of(module)
        for lineno, name in imports(path):
            theirs = layer_of(name)
            if (module, name) in ALLOWED or theirs is None:
                continue
            if mine is not None and theirs > mine:
                upward.append(f"{path.relative_to(HARNESS.parent)}:{lineno}: {module} imports {name}")
    assert not upward, "\n".join(upward)
