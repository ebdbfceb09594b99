"""The package's shape: no import cycle, one owner per model kind.

Both read the source with the standard library's ``ast`` (imports inside
functions included), so they hold for code paths no other test runs.
"""

import ast
import pathlib

import pytest

from funcnet import config, tasks
from funcnet.data import registry as data_registry
from funcnet.models import MODELS, registry

ROOT = pathlib.Path(__file__).resolve().parents[1] / "funcnet"


def _module_name(path: pathlib.Path) -> str:
  parts = ("funcnet",) + path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _imports(path: pathlib.Path) -> set:
  """The funcnet modules ``path`` imports, anywhere in it (lazy ones too).

  ``from funcnet.a import b`` imports ``funcnet.a.b`` when that is a module,
  else ``funcnet.a``. A parent package that Python runs first is not
  counted (every module would then import ``funcnet``).
  """
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names if a.name in MODULES)
    elif isinstance(node, ast.ImportFrom) and node.module \
        and node.level == 0 and node.module.split(".")[0] == "funcnet":
      for a in node.names:
        sub = f"{node.module}.{a.name}"
        out.add(sub if sub in MODULES else node.module)
  return out & set(MODULES)


def _cycle(graph: dict):
  """One import cycle as a list of modules, or None (depth-first search)."""
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(graph[m]):
      if state.get(n) == "open":
        return stack[stack.index(n):] + [n]
      if n not in state:
        found = visit(n)
        if found:
          return found
    state[m] = "done"
    stack.pop()
    return None

  for m in sorted(graph):
    if m not in state:
      found = visit(m)
      if found:
        return found
  return None


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_the_package():
  graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
  # the graph is real: the CLI reaches the experiment lazily, which reaches runs
  assert "funcnet.experiment" in graph["funcnet.cli.train"]
  assert "funcnet.run.rundir" in graph["funcnet.experiment.loop"]
  assert _cycle(graph) is None, " -> ".join(_cycle(graph))


# The layers, bottom to top: a package may import those below it, never
# one above. run/ is one run's infrastructure around the training loop;
# bench/ and cli/ sit on everything.
ABOVE_RUN = ("funcnet.run", "funcnet.bench", "funcnet.cli", "funcnet.experiment",
             "funcnet.sweep", "funcnet.studies", "funcnet.finetune")


def _in(name: str, packages) -> bool:
  return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_layers_import_only_downwards():
  graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
  wrong = []
  for m, deps in sorted(graph.items()):
    if not _in(m, ABOVE_RUN) and m != "funcnet":
      wrong += [f"{m} imports {d}" for d in sorted(deps)
                if _in(d, ("funcnet.run", "funcnet.bench", "funcnet.cli"))]
    if _in(m, ("funcnet.run",)):
      wrong += [f"{m} imports {d}" for d in sorted(deps)
                if _in(d, ("funcnet.bench", "funcnet.cli"))]
  assert not wrong, wrong


def test_models_import_nothing_from_data():
  # A builder is sized by a DataSpec (funcnet.model), not by a Dataset.
  graph = {m: _imports(p) - {m} for m, p in MODULES.items()}
  wrong = [f"{m} imports {d}" for m, deps in sorted(graph.items())
           if _in(m, ("funcnet.models",))
           for d in sorted(deps) if _in(d, ("funcnet.data",))]
  assert not wrong, wrong


def test_the_top_level_holds_the_library_not_the_infrastructure():
  top = sorted(p.stem for p in ROOT.glob("*.py"))
  assert len(top) <= 20, top
  # what moved into run/ and bench/ stays there
  for gone in ("runs", "checkpoints", "resume", "preemption", "preflight",
               "progress", "tensorboard", "plots", "plot_process",
               "compile_cache", "compare", "bench", "bench_data"):
    assert gone not in top, gone


def _literals(node, names) -> list:
  """String constants in ``names`` inside ``node`` (a constant, or a
  tuple/list/set of them)."""
  items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
  return [n.value for n in items if isinstance(n, ast.Constant)
          and isinstance(n.value, str) and n.value in names]


def _dispatches(names, owner: str) -> list:
  """``file:line 'name'`` for each comparison or subscript with one of
  ``names`` as a string literal, in every module outside ``owner`` (a
  module or package name)."""
  found = []
  for name, path in MODULES.items():
    if name == owner or name.startswith(owner + "."):
      continue
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Compare):
        hits = sum((_literals(n, names) for n in [node.left, *node.comparators]), [])
      elif isinstance(node, ast.Subscript):
        hits = _literals(node.slice, names)
      else:
        continue
      found += [f"{path.name}:{node.lineno} {h!r}" for h in hits]
  return found


def test_no_module_outside_models_dispatches_on_a_kind_name():
  found = _dispatches(registry.KINDS, "funcnet.models")
  assert not found, found


def _dataset_names() -> set:
  """The built-in datasets' names. A name that is also a task's
  ("regression", "ratings") is left to the task registry's test: compared
  with ``ds.task`` it names the task."""
  tasks_of_data = {s.task for s in data_registry.DATASETS.values()}
  return set(data_registry.DATASETS) - tasks_of_data


def test_no_module_outside_data_dispatches_on_a_dataset_name():
  found = _dispatches(_dataset_names(), "funcnet.data")
  assert not found, found
  # the finder finds one
  tree = ast.parse("if d['name'] == 'digits' or x['mnist1d']: pass")
  assert sorted(sum((_literals(n, _dataset_names()) for n in ast.walk(tree)),
                    [])) == ["digits", "mnist1d"]


def test_every_dataset_is_registered_once_and_the_config_lists_the_registries():
  from funcnet import data, optimizers, schedules
  assert sorted(data_registry.DATASETS) == ["digits", "mnist1d", "moons",
                                            "ratings", "regression",
                                            "spirals", "text", "xor"]
  assert data.DATASETS is data_registry.DATASETS
  for name, source in data_registry.DATASETS.items():
    assert source.doc and name in config.DOCS["data.name"]
  for name in ("xor", "regression", "digits", "ratings"):  # mnist1d: slow
    assert data.load(name).task == data_registry.DATASETS[name].task
  for kind in registry.KINDS:
    assert kind in config.DOCS["model.kind"]
  assert config.DOCS["optimizer.name"].split(" | ") == list(optimizers.OPTIMIZERS)
  assert "warmup" not in config.DOCS["schedule.name"]
  assert set(config.DOCS["schedule.name"].split(" | ")) \
      == set(schedules.SCHEDULES) - {"warmup"}
  assert config.DOCS["optimizer.b1"] == "adam / adamw: first-moment decay"
  with pytest.raises(ValueError, match="registered twice"):
    data_registry.register(data_registry.DATASETS["xor"]._replace(doc="x"))


def test_every_kind_is_registered_once_with_a_documented_config_table():
  assert list(registry.KINDS) == ["mlp", "cnn", "rnn", "gru", "transformer",
                                  "mf", "ncf", "gpt", "resnet", "rnn_lm"]
  for name, kind in registry.KINDS.items():
    assert config.DEFAULTS["model"][name] == kind.defaults
    for key in kind.defaults:
      assert config.DOCS[f"model.{name}.{key}"]
    assert MODELS[name] is kind.build
  with pytest.raises(ValueError, match="registered twice"):
    registry.register(registry.KINDS["mlp"]._replace(build=print))


def test_a_saved_spec_rebuilds_the_same_model():
  import jax
  import numpy as np
  from funcnet import data, experiment
  cfg = config.load(None, ["model.kind=cnn", "model.cnn.image_shape=[8, 8]",
                           "model.cnn.channels=[3]"])
  ds = data.load("digits")
  model = experiment.build_model(cfg, ds)
  again = registry.rebuild(model.spec)
  assert again.spec == model.spec and again.head == model.head == ("dense", -1)
  p = model.init(jax.random.key(0))
  x = np.asarray(ds.x_test[:5], np.float32)
  np.testing.assert_array_equal(model.logits(p, x), again.logits(p, x))


# The hand-written gradient path: no autodiff anywhere in it, so "manual vs
# jax.grad" compares two independent computations.
HAND_WRITTEN = ["backprop.py", "activations.py", "losses.py", "layers", "models"]
AUTODIFF = ("grad", "value_and_grad", "vjp", "jvp", "linearize",
            "linear_transpose", "custom_vjp", "custom_jvp", "hessian",
            "jacfwd", "jacrev")


def _autodiff_uses(source: str) -> list:
  """Attribute uses ``jax.<f>`` / ``jax.<mod>.<f>`` and imports of an
  autodiff function ``f`` in ``source``, with line numbers."""
  found = []
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Attribute) and node.attr in AUTODIFF:
      root = node.value
      while isinstance(root, ast.Attribute):
        root = root.value
      if isinstance(root, ast.Name) and root.id == "jax":  # not loss.grad
        found.append((node.lineno, node.attr))
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jax"):
      found += [(node.lineno, a.name) for a in node.names if a.name in AUTODIFF]
  return found


def test_the_autodiff_finder_finds_autodiff():
  src = ("import jax\nfrom jax import vjp\n"
         "def f(x, loss):\n  return jax.grad(g)(x) + jax.custom_vjp(g) + loss.grad\n")
  assert sorted(n for _, n in _autodiff_uses(src)) == ["custom_vjp", "grad", "vjp"]


def test_the_hand_written_path_calls_no_autodiff():
  paths = []
  for entry in HAND_WRITTEN:
    p = ROOT / entry
    paths += sorted(p.rglob("*.py")) if p.is_dir() else [p]
  assert len(paths) >= 10
  found = {str(p.relative_to(ROOT)): _autodiff_uses(p.read_text()) for p in paths}
  assert not {k: v for k, v in found.items() if v}, found


def test_no_module_outside_the_task_registry_dispatches_on_a_task_name():
  # "regression" is also a dataset's name: a comparison or subscript with
  # it is a dispatch on one or the other, and the data registry owns that.
  found = _dispatches(tasks.TASKS, "funcnet.tasks")
  assert not found, found
def _code_lines(path: pathlib.Path) -> int:
  """Lines of ``path`` not inside a docstring (module, class or function)."""
  tree = ast.parse(path.read_text())
  doc = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                         ast.AsyncFunctionDef)) and node.body \
        and isinstance(node.body[0], ast.Expr) \
        and isinstance(node.body[0].value, ast.Constant) \
        and isinstance(node.body[0].value.value, str):
      d = node.body[0]
      doc.update(range(d.lineno, d.end_lineno + 1))
  return len(path.read_text().splitlines()) - len(doc)


def _docstring_lines(node) -> int:
  body = node.body
  if body and isinstance(body[0], ast.Expr) \
      and isinstance(body[0].value, ast.Constant) \
      and isinstance(body[0].value.value, str):
    return body[0].end_lineno - body[0].lineno + 1
  return 0


def _builders() -> set:
  """``(module, name)`` of every registered model kind's builder: its
  keyword hyperparameters are the config table's keys, so they may be many."""
  fns = [getattr(k.build, "func", k.build) for k in registry.KINDS.values()]
  return {(f.__module__, f.__name__) for f in fns}  # func: a partial's


def test_files_functions_and_signatures_stay_small():
  """Issue 22's limits, everywhere: no file over 600 lines outside its
  docstrings, no function over 80 lines outside its docstring, no function
  with more than 10 parameters (a model builder's hyperparameters aside)."""
  wrong, builders = [], _builders()
  for m, path in sorted(MODULES.items()):
    if _code_lines(path) > 600:
      wrong.append(f"{m}: {_code_lines(path)} lines without docstrings")
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        n_params = (len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
                    + bool(a.vararg) + bool(a.kwarg))
        length = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
        if length > 80:
          wrong.append(f"{m}.{node.name}: {length} lines")
        if n_params > 10 and (m, node.name) not in builders:
          wrong.append(f"{m}.{node.name}: {n_params} parameters")
  assert not wrong, wrong


def test_the_size_check_sees_a_long_function_and_a_builder():
  long_fn = 'def f(a):\n  """doc\n  doc"""\n' + "  a += 1\n" * 80
  node = ast.parse(long_fn).body[0]
  assert node.end_lineno - node.lineno + 1 - _docstring_lines(node) == 81
  assert ("funcnet.models.cnn", "cnn") in _builders()
