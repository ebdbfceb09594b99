"""What a new user reads when something is wrong (issue 22, part 3): each
message says what happened and what to do, in one line, exit 2.

In-process through ``funcnet.cli.main`` (what the console script runs);
argparse's own errors end in ``SystemExit(2)`` there.
"""

import pathlib
import re
import sys

import pytest

from funcnet import cli, errors
from funcnet.cli import parser as cli_parser
from funcnet.models import mlp, registry

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _one_line_error(argv, capsys) -> str:
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "Traceback" not in err, err
  return err


# --- run folders -------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["eval", "--run", "{missing}"],
    ["train", "--out", "{missing}", "--resume"],
])
def test_a_run_folder_that_does_not_exist_is_named_as_such(argv, tmp_path,
                                                           capsys):
  missing = str(tmp_path / "no-such-run")
  err = _one_line_error([a.format(missing=missing) for a in argv], capsys)
  assert f"{missing!r}: no such run folder" in err
  assert "config.json" not in err


def test_fine_tuning_before_its_pretraining_run_says_which_config_to_train(
    tmp_path, monkeypatch, capsys):
  # from a folder where runs/digits_pretrain_0to4 does not exist
  monkeypatch.chdir(tmp_path)
  config = ROOT / "configs" / "digits_finetune.toml"
  err = _one_line_error(["train", "--config", str(config), "--out",
                         str(tmp_path / "ft")], capsys)
  assert "'finetune.from_run' = 'runs/digits_pretrain_0to4'" in err
  assert "no such run folder" in err
  pretrain = ROOT / "configs" / "digits_pretrain_0to4.toml"
  assert (f"funcnet train --config {pretrain} --out "
          "runs/digits_pretrain_0to4") in err


# --- optional extras -----------------------------------------------------------

def test_a_missing_extra_names_the_editable_install():
  e = errors.needs_extra("--search optuna", "sweep", "optuna")
  assert isinstance(e, errors.ConfigError) and e.exit_code == 2
  assert 'pip install -e ".[sweep]"' in str(e) and "\n" not in str(e)


def test_optuna_missing_gets_the_hint(monkeypatch):
  from funcnet.sweep import search
  monkeypatch.setitem(sys.modules, "optuna", None)
  with pytest.raises(errors.ConfigError, match=re.escape(
      'pip install -e ".[sweep]"')):
    search._optuna()


def test_no_message_names_an_install_from_a_package_index():
  # funcnet is not on PyPI: every "pip install" in the source is the
  # editable install from the checkout (pip install -e ".[extra]").
  found = []
  for path in (ROOT / "funcnet").rglob("*.py"):
    for n, line in enumerate(path.read_text().splitlines(), 1):
      if "pip install" in line and "pip install -e" not in line:
        found.append(f"{path.name}:{n}: {line.strip()}")
  assert not found, found


# --- the command line itself ---------------------------------------------------

@pytest.mark.parametrize("argv,typo,near", [
    (["trian"], "trian", "train"),
    (["gradchek"], "gradchek", "gradcheck"),
    (["data", "convrt", "a", "b"], "convrt", "convert"),
    (["bench", "startp"], "startp", "startup"),
    (["train", "--progress", "alwyas"], "alwyas", "always"),
])
def test_a_mistyped_name_gets_did_you_mean_and_exit_2(argv, typo, near,
                                                      capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert f"invalid choice: '{typo}'" in err
  assert f"did you mean '{near}'?" in err


def test_a_name_far_from_every_command_gets_no_guess(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["xyzzy"])
  assert e.value.code == 2
  assert "did you mean" not in capsys.readouterr().err


@pytest.mark.parametrize("command", cli.COMMANDS, ids=lambda c: c.NAME)
def test_every_command_has_a_help_description(command, capsys):
  assert len(command.DESCRIPTION) > 40
  with pytest.raises(SystemExit) as e:
    cli.main([command.NAME, "--help"])
  assert e.value.code == 0
  out = " ".join(capsys.readouterr().out.split())
  assert " ".join(command.DESCRIPTION.split()) in out


def _readme_exit_table() -> dict:
  """``{status: meaning}`` from the README's "Exit status" table, markdown
  (backticks, links) stripped."""
  text = (ROOT / "README.md").read_text()
  section = text[text.index("### Exit status"):]
  rows = {}
  for line in section.splitlines()[1:]:
    if line.startswith("#"):
      break
    m = re.match(r"\| (\S+) \| (.*) \|$", line)
    if m and m.group(1) not in ("status", "---"):
      meaning = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m.group(2))
      rows[m.group(1)] = meaning.replace("`", "")
  return rows


def test_help_lists_the_exit_statuses_of_the_readme(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  listed, status = {}, None
  for line in out[out.index("exit status:"):].splitlines()[1:]:
    m = re.match(r"  (\S+)\s+(.*)", line)
    if m and not line.startswith("   "):
      status = m.group(1)
      listed[status] = m.group(2)
    elif status is not None and line.strip():
      listed[status] += " " + line.strip()
  readme = _readme_exit_table()
  assert set(readme) == {"0", "1", "2", "3", "70", "75", "130", "128+N"}
  assert listed == readme
  assert cli_parser.EXIT_STATUS in out


# --- what a run prints, and config errors ------------------------------------

def test_a_model_without_a_hidden_layer_shows_no_hidden_activation():
  logistic = mlp([40, 10], activation="relu", output_activation="softmax")
  shown = registry.describe(logistic.spec)
  assert shown.startswith("mlp ") and '"sizes": [40, 10]' in shown
  assert '"activation"' not in shown and '"dropout"' not in shown
  assert '"output_activation": "softmax"' in shown
  hidden = registry.describe(mlp([40, 8, 10], activation="relu").spec)
  assert '"activation": "relu"' in hidden and '"dropout": 0.0' in hidden


def test_the_logistic_config_prints_no_activation(tmp_path, capsys):
  assert cli.main(["train", "--config", str(ROOT / "configs" /
                                            "mnist1d_logistic.toml"),
                   "--out", str(tmp_path / "run"), "--set", "train.epochs=1",
                   "--set", "run.plots=false", "--set",
                   "run.progress=never"]) == 0
  line = next(l for l in capsys.readouterr().out.splitlines()
              if l.startswith("model "))
  assert "sizes" in line and "activation:" not in line
  assert '"activation"' not in line


@pytest.mark.parametrize("hidden,entry", [("[-5]", "-5"), ("[8, 0]", "0")])
def test_a_bad_hidden_width_is_named_by_the_key_the_user_wrote(
    hidden, entry, tmp_path, capsys):
  err = _one_line_error(["train", "--out", str(tmp_path / "r"), "--set",
                         f"model.mlp.hidden={hidden}"], capsys)
  assert f"config key 'model.mlp.hidden' entry {entry} must be a positive " \
      "integer" in err
  assert "sizes" not in err
