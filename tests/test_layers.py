"""No harness module imports a higher layer (top-level, function-level and type-checking imports alike).

The layers are those of the README's architecture section; a new module must be placed in this table.
"""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "harness"

LAYERS = [
    {"errors", "registry", "config", "sampling", "settings", "prompts", "data", "store", "folder_lock", "metrics",
     "manifest", "task"},
    {"grading", "lora", "checkpoint", "method"},
    {"models", "model_size", "gguf_export", "gguf_lora"},
    {"rollout", "diagnostics"},
    {"evaluate", "report", "tables", "plots", "paper_numbers", "terminal", "regrade"},
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


# ---- seeds come from harness/sampling.py only (issue 24 item 5) ------------------------------------------
SEEDING_CALLS = {"Random", "RandomState", "default_rng", "manual_seed", "manual_seed_all", "Generator", "set_seed",
                 "seed", "fork_rng"}  # what makes or seeds a random source


def seed_derivations(path: Path) -> list[str]:
    """Where a module makes or seeds a random source itself, or computes a seed by arithmetic."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in SEEDING_CALLS:
                found.append(f"{path.name}:{node.lineno} calls {name}()")
        elif isinstance(node, ast.BinOp):
            operands = [getattr(side, "attr", getattr(side, "id", "")) for side in (node.left, node.right)]
            if any("seed" in str(name).lower() for name in operands):
                found.append(f"{path.name}:{node.lineno} computes a seed ({ast.unparse(node)})")
    return found


def test_seeds_are_derived_in_sampling_py_only():
    root = HARNESS.parent
    modules = [p for folder in ("harness", "methods", "tasks") for p in sorted((root / folder).rglob("*.py"))]
    found = [where for path in modules if path != HARNESS / "sampling.py" for where in seed_derivations(path)]
    assert not found, "derive seeds with harness.sampling (seed_for, rng_for, torch_generator, torch_seeded):\n" + \
        "\n".join(found)


def test_the_seed_check_sees_each_kind_of_derivation(tmp_path):
    """The check above is only as good as what it recognises: each way the harness once derived a seed."""
    for source in ("random.Random(f'{seed}:x')", "torch.manual_seed(0)", "torch.Generator(device=d).manual_seed(s)",
                   "set_seed(config.seed)", "attach(model, config.seed + 1)", "np.random.default_rng(7)"):
        (tmp_path / "m.py").write_text(source + "\n")
        assert seed_derivations(tmp_path / "m.py"), source
    (tmp_path / "m.py").write_text("rng_for(seed, 'epoch').shuffle(order)\nseed_for(config.seed, 'critic')\n")
    assert seed_derivations(tmp_path / "m.py") == []


# ---- a results folder's files are opened by their owner only (issue 24 item 2) -------------------------
OWNED_FILES = {"config.yaml", "manifest.json", "samples.jsonl", "metrics.json", "log.jsonl", "compare.json"}
OWNER = HARNESS / "store.py"  # RunStore and CompareFolder


def names_owned_file(path: Path) -> list[str]:
    """Where a module names one of a results folder's files as a path (a string that is the file's name,
    or ends in "/name"), rather than asking RunStore / CompareFolder for it. Sentences that mention a
    file (docstrings, messages) are not paths and pass."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.rsplit("/", 1)[-1]
            if name in OWNED_FILES and (node.value == name or node.value.endswith("/" + name)):
                found.append(f"{path.parent.name}/{path.name}:{node.lineno} names {name}")
    return found


def test_only_the_store_opens_a_results_folders_files():
    root = HARNESS.parent
    modules = [p for folder in ("harness", "methods", "tasks") for p in sorted((root / folder).rglob("*.py"))]
    found = [where for path in modules if path != OWNER for where in names_owned_file(path)]
    assert not found, "go through harness.store's RunStore / CompareFolder:\n" + "\n".join(found)


def test_the_owner_check_sees_each_way_of_naming_a_file(tmp_path):
    for source in ('open(run / "samples.jsonl")', 'json.loads((folder / "compare.json").read_text())',
                   'Path(out).with_name("manifest.json")', 'p = f"{run}/config.yaml"', 'os.path.join(d, "log.jsonl")'):
        (tmp_path / "m.py").write_text(source + "\n")
        assert names_owned_file(tmp_path / "m.py"), source
    (tmp_path / "m.py").write_text('raise HarnessError(f"{run}: no samples.jsonl")\n"""Reads config.yaml."""\n')
    assert names_owned_file(tmp_path / "m.py") == []
