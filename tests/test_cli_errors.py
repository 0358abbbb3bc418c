"""A mistake in --config is one `error:` line and exit status 1, before jax is imported.

Fast: the unit functions work on ConfigDicts, and each subprocess stops at flag parsing (a few
tenths of a second; none imports jax).
"""

import pathlib
import subprocess
import sys

import pytest
from absl import flags

from configs import default, smmnist
from mcvd_jax import cli_errors

ROOT = pathlib.Path(__file__).resolve().parents[1]  # the subprocesses' working directory


def test_closest_first_puts_the_close_matches_first_then_the_rest_in_order():
  assert cli_errors.closest_first("targte", ["kind", "schedule", "target"]) == [
      "target", "kind", "schedule"]
  assert cli_errors.closest_first("zzz", ["kind", "target"]) == ["kind", "target"]
  # Several close matches: best first.
  assert cli_errors.closest_first("tinyy", ["quick", "tin", "tiny"])[:2] == ["tiny", "tin"]


def test_suggestion_with_and_without_a_close_match():
  assert cli_errors.suggestion("targte", ["kind", "target"], "Fields") == (
      "; did you mean target? Fields: target, kind")
  assert cli_errors.suggestion("zzz", ["kind"], "Fields") == ". Fields: kind"
  assert cli_errors.suggestion("tinyy", ["", "tiny"], "Variants", quote=True) == (
      "; did you mean 'tiny'? Variants: 'tiny', ''")


def test_unknown_field_names_a_mistyped_section():
  line = cli_errors.unknown_field(default.get_config(), "difusion.target")
  assert line.startswith("--config.difusion.target: the config has no field 'difusion'; "
                         "did you mean diffusion? Fields: diffusion, ")
  assert "training" in line and "\n" not in line


def test_unknown_field_names_a_mistyped_field_of_its_section():
  line = cli_errors.unknown_field(default.get_config(), "diffusion.targte")
  assert line.startswith("--config.diffusion.targte: 'diffusion' has no field 'targte'; "
                         "did you mean target? Fields: target, ")
  assert "schedule" in line and "model" not in line  # the section's fields only


def test_unknown_field_accepts_a_valid_path_and_rejects_a_leaf_as_section():
  config = default.get_config()
  assert cli_errors.unknown_field(config, "diffusion.target") is None
  assert cli_errors.unknown_field(config, "seed") is None
  assert "'seed' is a field (int), not a section" in cli_errors.unknown_field(config, "seed.x")


def test_overrides_and_config_argument_are_read_from_argv():
  argv = ["main", "--config", "configs/smmnist.py:tiny", "--config.training.batch_size", "8",
          "--config.diffusion.target=white", "--noconfig.diffusion.l1", "--workdir=/tmp/w"]
  assert cli_errors.config_argument(argv) == "configs/smmnist.py:tiny"
  assert cli_errors.config_overrides(argv) == {"training.batch_size": "8",
                                               "diffusion.target": "white",
                                               "diffusion.l1": None}


def test_explain_a_bad_value_names_the_field_and_its_type():
  argv = ["main", "--config=configs/smmnist.py:tiny", "--config.training.batch_size=abc"]
  error = flags.IllegalFlagValueError(
      "flag --config.training.batch_size=abc: invalid literal for int() with base 10: 'abc'")
  assert cli_errors.explain(argv, error) == (
      "--config.training.batch_size: expected int, got 'abc'")


def test_explain_a_missing_file_and_an_unknown_variant(tmp_path):
  missing = str(tmp_path / "nope.py")
  assert "no such config file" in cli_errors.explain(["main", f"--config={missing}"])
  line = cli_errors.explain(["main", "--config=configs/smmnist.py:tinyy"])
  assert line.startswith("configs/smmnist.py: unknown variant 'tinyy'; did you mean 'tiny'? "
                         "Variants: 'tiny', ''")


def test_parse_variant_lists_the_variants_closest_first():
  with pytest.raises(default.UnknownVariantError) as err:
    smmnist.get_config("tinyy")
  assert isinstance(err.value, ValueError) and cli_errors.is_unknown_variant(err.value)
  assert str(err.value) == ("configs/smmnist.py: unknown variant 'tinyy'; did you mean 'tiny'? "
                            "Variants: 'tiny', '', 'spatin', 'past_mask', 'general', 'quick', 'quick1'")


# argv after the program name, the bad name it must mention, the closest valid name.
CASES = {
    "field": (["--config=configs/smmnist.py:tiny", "--config.diffusion.targte=white"],
              "'targte'", "did you mean target?"),
    "section": (["--config=configs/smmnist.py:tiny", "--config.difusion.target=white"],
                "'difusion'", "did you mean diffusion?"),
    "variant": (["--config=configs/smmnist.py:tinyy"], "'tinyy'", "did you mean 'tiny'?"),
    "value": (["--config=configs/smmnist.py:tiny", "--config.training.batch_size=abc"],
              "--config.training.batch_size", "expected int"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_main_prints_one_error_line_and_exits_1(case, tmp_path):
  args, bad, closest = CASES[case]
  run = subprocess.run([sys.executable, "-m", "mcvd_jax.main", *args, f"--workdir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert run.returncode == 1, run.stderr
  lines = run.stderr.splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
  assert bad in lines[0] and closest in lines[0]


# Calls main's flags parser on the argv given after `-c`, then says whether jax was imported.
PARSE_ONLY = """
import sys
from mcvd_jax import main
sys.argv = argv = ["main"] + sys.argv[1:]  # ml_collections reads the overrides from sys.argv
try:
  main.parse_flags(argv)
except SystemExit as exit:
  print(exit.code)
print("jax" in sys.modules)
"""


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_error_comes_before_jax_is_imported(case, tmp_path):
  args, bad, _ = CASES[case]
  run = subprocess.run([sys.executable, "-c", PARSE_ONLY, *args, f"--workdir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert run.returncode == 0, run.stderr
  message, jax_imported = run.stdout.splitlines()
  assert message.startswith("error: ") and bad in message
  assert jax_imported == "False"


def test_valid_flags_parse_as_before(tmp_path):
  script = PARSE_ONLY.replace('print("jax" in sys.modules)',
                              'print(main.FLAGS.config.training.batch_size, main.FLAGS.mode)')
  run = subprocess.run([sys.executable, "-c", script, "--config=configs/smmnist.py:tiny",
                        "--config.training.batch_size=2", "--mode=sample",
                        f"--workdir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert (run.returncode, run.stdout, run.stderr) == (0, "2 sample\n", "")
