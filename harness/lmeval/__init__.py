"""lm-evaluation-harness integration: the `selfcorrect` model type and the `selfcorrect_*` task configs.

Nothing here imports lm-eval (or torch) at `import harness`: `install_hook()` only puts a tiny finder
on `sys.meta_path` that, once lm-eval's model registry module has been executed, registers the
`selfcorrect` model there as a lazy placeholder (`harness.lmeval.model:SelfCorrectLM`). So after
`import harness`, `lm_eval.simple_evaluate(model="selfcorrect", ...)` and `lm_eval --model selfcorrect`
(through `harness lm-eval`) find the model, and HFLM is imported only when the model is built.
"""

from __future__ import annotations

import sys
from pathlib import Path

MODEL_NAME = "selfcorrect"
MODEL_TARGET = "harness.lmeval.model:SelfCorrectLM"
TASKS_DIR = Path(__file__).resolve().parent / "tasks"  # selfcorrect_gsm8k.yaml, selfcorrect_math500.yaml
INSTALL_HINT = "pip install 'selfcorrect-harness[lm-eval]'"
_REGISTRY_MODULE = "lm_eval.api.registry"


def register_model() -> None:
    """Register `selfcorrect` in lm-eval's model registry (a lazy placeholder; idempotent, never raises)."""
    try:
        registry = sys.modules.get(_REGISTRY_MODULE)
        if registry is None:
            import lm_eval.api.registry as registry
        import lm_eval.models  # noqa: F401  lm-eval's own lazy entries: an empty registry is filled only then
        if MODEL_NAME not in registry.model_registry:
            registry.model_registry.register(MODEL_NAME, target=MODEL_TARGET)
    except Exception as exc:  # a broken or frozen lm-eval must not break `import lm_eval`
        import logging

        logging.getLogger(__name__).debug("could not register the %r lm-eval model: %s", MODEL_NAME, exc)


class _RegisteringLoader:
    """Runs the real loader of `lm_eval.api.registry`, then registers our model in it."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        register_model()

    def __getattr__(self, name):  # get_source, get_resource_reader, ...: the real loader's
        return getattr(self._loader, name)


class _RegistryWatcher:
    """A meta-path finder that only reacts to `lm_eval.api.registry`; it never loads anything itself."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _REGISTRY_MODULE:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or isinstance(finder, _RegistryWatcher) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def install_hook() -> None:
    """Called by `import harness`: register now if lm-eval's registry is loaded, else when it loads."""
    if _REGISTRY_MODULE in sys.modules:
        register_model()
    elif not any(isinstance(finder, _RegistryWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegistryWatcher())


def tasks_dir() -> Path:
    return TASKS_DIR


def run_cli(args: list[str]) -> None:
    """`harness lm-eval ARGS`: lm-eval's own CLI with our model registered and our task folder included.

    ARGS reach lm-eval unchanged; our task folder is added to whatever `--include_path` says (lm-eval's
    TaskManager takes a list of folders; its CLI flag takes one).
    """
    from harness.errors import HarnessError

    try:
        from lm_eval.__main__ import cli_evaluate
        from lm_eval.tasks import manager
    except ImportError as exc:
        raise HarnessError(f"lm-eval is not installed ({exc.name or exc}): {INSTALL_HINT}") from None
    register_model()
    original_init = manager.TaskManager.__init__

    def init_with_our_tasks(self, verbosity=None, include_path=None, *rest, **kwargs):
        paths = list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        paths = [p for p in paths if p]
        if not any(Path(p).resolve() == TASKS_DIR for p in paths):
            paths.append(str(TASKS_DIR))
        original_init(self, verbosity, paths, *rest, **kwargs)

    saved_argv = sys.argv
    sys.argv = ["lm-eval", *args]
    manager.TaskManager.__init__ = init_with_our_tasks
    try:
        cli_evaluate()
    finally:
        manager.TaskManager.__init__ = original_init
        sys.argv = saved_argv
