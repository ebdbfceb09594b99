"""Shared test setup: float64 for the tests that ask for it (``x64``), and a
fresh PRNG key per use.

JAX's default is float32, and that is the path users run, so the suite runs
in float32 too. A test that compares at float64 tolerances (manual vs autodiff
gradients to ~1e-12, optimizers vs optax to 1e-12, ``jnp.float64`` arrays)
requests the ``x64`` fixture, per test or per module with
``pytestmark = pytest.mark.usefixtures("x64")``. Without it ``jnp.float64``
silently becomes float32 with a UserWarning, which the ``filterwarnings =
["error"]`` in pyproject.toml turns into a failure.
"""

import itertools
import os
import shutil
import tempfile

import jax
import pytest


def pytest_configure(config):
  """No persistent compilation cache of the user's in the suite
  (``funcnet.run.compile_cache``): ``cli.main`` called in-process would
  otherwise turn it on in ``~/.cache/funcnet/xla`` for every later test of
  the worker, and the command's subprocesses inherit the variable too.
  ``tests/test_startup.py`` gives its subprocesses a temporary cache of
  their own. Nor funcnet's program cache (``FUNCNET_PROGRAM_CACHE=0``):
  the tests of it turn it on in a folder of their own.

  Each process of the suite (each xdist worker) keeps a persistent cache
  of its own instead, in a temporary folder removed at its end
  (:func:`_worker_compile_cache`): tests build the same small programs
  again and again from new function objects, which JAX's in-memory caches
  miss. Subprocesses do not inherit it (a cache per worker shared with
  them was tried: JAX writes entries in place, so processes started side
  by side could read half of one; docs/performance.md).

  The fast loop (``-m "not slow"``) compiles at XLA's optimisation level
  0 and with XLA:CPU's older loop emitters for fusions
  (``--xla_cpu_use_fusion_emitters=false``): most of this suite's time is
  XLA compiling small programs. Level 0 cut the backprop and attention
  tests 142 s -> 97 s; the older emitters then halve what is left (the
  models, RNN, conv and train tests 51 -> 28 s, XLA's compile time 35 ->
  15 s; the whole fast loop 3:31 -> 2:14 on 2 cores). Both cost run time
  (the old emitters' GRU step is 26% slower), which these tests do not
  spend. Numerics are the same up to the order of float sums, which every
  tolerance here allows. The full suite, which CI runs (``pytest -n 2``),
  keeps XLA's defaults, what users run. Set before any JAX backend starts;
  pytest-xdist's workers inherit it, and so do the command's
  subprocesses."""
  os.environ["FUNCNET_COMPILATION_CACHE"] = "off"
  os.environ["FUNCNET_PROGRAM_CACHE"] = "0"
  if (config.getoption("markexpr", "") or "").replace(" ", "") == "notslow":
    from helpers import QUICK_TO_COMPILE
    flags = os.environ.get("XLA_FLAGS", "")
    for flag in (f"--{k}={str(v).lower()}"
                 for k, v in QUICK_TO_COMPILE.items()):
      if flag.split("=")[0] not in flags:
        flags = (flags + " " + flag).strip()
    os.environ["XLA_FLAGS"] = flags
  config._funcnet_xla_cache = _worker_compile_cache()


def pytest_unconfigure(config):
  where = getattr(config, "_funcnet_xla_cache", None)
  if where:
    shutil.rmtree(where, ignore_errors=True)


def _worker_compile_cache() -> str:
  """JAX's persistent compilation cache on for this process only, every
  program however small, in a new temporary folder; returns the folder.
  Measured on the train, runs, cli, sweep, resume and models tests: 13%
  less CPU (a program another test compiled is read, not compiled)."""
  from funcnet.run import compile_cache
  return compile_cache.use(tempfile.mkdtemp(prefix="funcnet-tests-xla-"))


@pytest.fixture
def no_jax_cache():
  """JAX's persistent cache folder unset for one test (a test of what
  funcnet does when JAX has none; JAX itself keeps reading the folder it
  opened first, so this changes only what funcnet sees)."""
  before = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  yield
  jax.config.update("jax_compilation_cache_dir", before)


# Under scripts/mutate.py (which sets FUNCNET_MUTATE): a failing Hypothesis
# test reports its first failing example without shrinking it (shrinking
# compiles a program per shape tried: a layer-norm mutant took 3 minutes
# instead of seconds), and keeps no example database, so one mutant's
# failures are not replayed against the next.
if os.environ.get("FUNCNET_MUTATE"):
  import hypothesis
  hypothesis.settings.register_profile(
      "mutate", database=None,
      phases=[hypothesis.Phase.explicit, hypothesis.Phase.reuse,
              hypothesis.Phase.generate])
  hypothesis.settings.load_profile("mutate")


# Out of the fast loop (``-m "not slow"``, 3 minutes on 2 cores), into the
# full suite that CI runs: 2.5-13 s each on 2 cores, each with a cheaper
# fast test of the same feature (named after the ``#``). Parametrized cases
# are listed by id, so the other cases of the same test stay fast.
SLOW_IN_THE_FAST_LOOP = {
    # tests/test_gradcheck.py (compare, its report) and the README block of
    # test_load_run.py (a README example run as written, 1 s)
    "test_readme.py::test_the_api_in_ten_lines_runs_as_written",
    # test_train.py's divergence test (fit's status, in-process)
    "test_cli.py::test_divergence_exits_3_and_keeps_the_last_good_checkpoint",
    # test_train.py::test_a_loss_that_grows_without_bound_but_stays_finite_...
    "test_runs.py::test_a_loss_that_climbs_but_stays_finite_exits_3_as_diverged",
    # test_plot_process.py::test_a_plotter_that_is_gone_cannot_draw
    "test_plot_process.py::test_a_run_whose_plotter_is_gone_draws_in_process",
    # test_train.py::test_resumed_fit_equals_an_uninterrupted_one
    "test_train.py::test_resume_with_dropout_eval_every_and_patience_equals_uninterrupted[2]",
    "test_train.py::test_each_micro_batch_draws_its_own_dropout_mask",
    # test_train.py::test_manual_and_autodiff_training_agree_in_float64
    "test_train.py::test_digits_mlp_reaches_97_percent_in_seconds",
    # test_parallel.py::test_two_fake_devices_train_like_one_and_...
    "test_parallel.py::test_fsdp_splits_params_and_adam_state_and_trains_like_one_device",
    "test_parallel.py::test_accumulated_gradient_equals_the_whole_batch[manual-2]",
    "test_parallel.py::test_accumulated_gradient_equals_the_whole_batch[cnn-6]",
    "test_parallel.py::test_bfloat16_compute_keeps_float32_params_loss_and_gradients[manual]",
    # test_applications.py::test_config_trains_one_epoch_..._gradcheck[xor_textbook]
    "test_cli.py::test_textbook_xor_config_classifies_all_four_points",
    # test_backward_attention.py::test_attention_backward_matches_vjp
    "test_backward_attention.py::test_gradient_check_has_the_manual_column",
    "test_backward_attention.py::test_attention_eagerly_differences_sharp_softmax",
    # test_models.py::test_gradient_check[transformer_cls_dropout]
    "test_backward_attention.py::test_manual_matches_autodiff_with_dropout[cls_sinusoidal_patch2]",
    # test_sweep.py::test_four_vectorised_variants_equal_each_trained_alone
    "test_sweep.py::test_a_diverging_variant_is_marked_and_the_others_finish",
    # test_applications.py::test_config_trains_one_epoch_..._gradcheck[ratings_ncf]
    "test_applications.py::test_ratings_csv_trains_evaluates_and_gradchecks",
    "test_applications.py::test_recommender_beats_the_global_mean[ratings_mf-15]",
    # test_applications.py::test_config_trains_one_epoch_..._gradcheck[digits_finetune]
    "test_runs.py::test_gradcheck_passes_on_a_shipped_config[digits_finetune.toml]",
    # test_streaming.py::test_shards_train_exactly_as_memory[chunks-of-7-dropout]
    "test_streaming.py::test_shards_train_exactly_as_memory[whole-epoch-accumulate]",
    # test_losses_more.py's other hinge tests
    "test_losses_more.py::test_hinge_trains_on_digits",
    # test_data.py's other MNIST-1D tests (the cached .npz)
    "test_data.py::test_mnist1d_is_make_dataset_with_default_arguments",
    # the diagonal's other cases: every activation appears in a fast one or
    # in test_both_match_finite_differences_for_smooth_activations
    "test_backprop.py::test_manual_equals_autodiff_every_activation_loss_and_depth[leaky_relu-mse-softmax]",
    "test_backprop.py::test_manual_equals_autodiff_every_activation_loss_and_depth[elu-mse-identity]",
    "test_backprop.py::test_manual_equals_autodiff_every_activation_loss_and_depth[gelu-mse-sigmoid]",
    "test_backprop.py::test_manual_equals_autodiff_every_activation_loss_and_depth[softplus-cross_entropy-identity]",
    "test_backprop.py::test_manual_equals_autodiff_every_activation_loss_and_depth[identity-mse-tanh]",
    # test_cli.py::test_train_writes_every_file_of_the_run_folder (digits MLP)
    "test_applications.py::test_config_trains_one_epoch_manually_and_passes_gradcheck[digits_mlp]",
    # test_backward_attention.py::test_layer_norm_backward_matches_vjp
    "test_backward_attention.py::test_layer_norm_eagerly_differences_and_cache",
    # test_backward_cnn.py::test_gradient_check_has_the_manual_column[2d_digits_like]
    "test_backward_cnn.py::test_gradient_check_has_the_manual_column[1d_mnist1d_like]",
    # test_study_textbook.py::test_textbook_study_numpy_manual_and_autodiff_agree
    "test_study_saddle_points.py::test_study_cli_rejects_an_unknown_parameter",
    # test_stream.py::test_data_commands_in_process
    "test_stream.py::test_data_convert_command_exits_0_then_2",
    "test_stream.py::test_bench_data_command_prints_the_table",
    # test_backward_rnn.py's gradient checks
    "test_backward_rnn.py::test_hidden_grad_norms_vanish_with_small_recurrent_weights",
    "test_backward_rnn.py::test_gradcheck_has_the_manual_column_and_passes[gru_T1_bidirectional_features3]",
    # test_losses_more.py's other trainings
    "test_losses_more.py::test_huber_trains_on_regression",
    # test_finetune.py::test_fine_tuning_starts_from_the_run_with_a_new_head
    "test_finetune.py::test_an_unfrozen_body_moves",
    "test_applications.py::test_config_trains_one_epoch_manually_and_passes_gradcheck[digits_finetune]",
    # test_train.py::test_fit_is_numpy_sgd_over_the_documented_batches[manual]
    "test_train.py::test_fit_is_numpy_sgd_over_the_documented_batches[autodiff]",
    # test_input_checks.py's other two command cases
    "test_input_checks.py::test_command_refuses_a_huge_seed",
    "test_input_checks.py::test_command_refuses_a_directory",
    # test_backward_rnn.py::test_gradcheck_has_the_manual_column_and_passes
    "test_backward_rnn.py::test_float32_path",
    # test_startup.py's [normal] and [he]
    "test_startup.py::test_initialisers_give_the_same_bits_op_by_op_and_jitted[xavier]",
    # test_runs.py::test_eval_reads_checkpoints_where_run_checkpoint_dir_put_them
    "test_cli.py::test_eval_reproduces_the_final_test_metrics",
    # test_train.py::test_resumed_fit_equals_an_uninterrupted_one and
    # test_preemption_and_resume.py::test_resume_with_a_changed_shape_...
    "test_runs.py::test_resume_through_the_command_equals_an_uninterrupted_run",
    # The trim of 2026-12-05 (the fast loop had grown to 3:53 on 2 cores):
    # test_backward_gpt.py (the GPT's backward and gradient-check rows) and
    # test_language.py's small text run
    "test_applications.py::test_config_trains_one_epoch_manually_and_passes_gradcheck[text_gpt]",
    # test_backward_rnn_lm.py (the LSTM's backward through time)
    "test_applications.py::test_config_trains_one_epoch_manually_and_passes_gradcheck[text_lstm]",
    # test_resnet.py::test_train_steps_keep_the_ema_of_the_batch_statistics
    # and test_train.py::test_resumed_fit_equals_an_uninterrupted_one
    "test_resnet.py::test_a_resumed_run_carries_the_running_statistics_on",
    # test_resnet.py::test_manual_equals_autodiff_in_training_mode_and_stats_get_zero
    "test_resnet.py::test_gradcheck_rows_in_inference_mode",
    # test_study_robustness.py's decide() and choose() tests on hand-made numbers
    "test_study_robustness.py::test_quick_robustness_study",
    # test_study_architecture.py::test_decide_on_hand_made_numbers and
    # test_choose_reads_validation_only
    "test_study_architecture.py::test_numbers_from_its_run_folders",
    # test_parallel.py::test_accumulated_gradient_equals_the_whole_batch and
    # test_preflight.py's data-parallel plan
    "test_parallel.py::test_two_fake_devices_train_like_one_and_all_reduce_the_gradient",
    "test_parallel.py::test_accumulated_gradient_equals_the_whole_batch[autodiff-3]",
    "test_parallel.py::test_bfloat16_compute_keeps_float32_params_loss_and_gradients[autodiff]",
    # test_sample.py::test_top_k_one_is_greedy_and_draws_follow_the_distribution
    "test_language.py::test_greedy_sampling_repeats_and_a_bad_prompt_is_one_line",
    # test_checkpoint_integrity.py's in-process fallback tests
    "test_checkpoint_integrity.py::test_no_noise_on_stderr_from_a_damaged_checkpoint",
    # test_adversarial_training.py::test_manual_and_autodiff_sources_train_alike_in_float64
    "test_adversarial_training.py::test_a_resumed_pgd_run_with_dropout_equals_an_uninterrupted_one",
    # test_models.py::test_gradient_check (the other transformer cases)
    "test_models.py::test_gradient_check[transformer_cls_dropout]",
    # test_startup.py::test_config_and_data_errors_come_before_any_compilation[batch]
    "test_startup.py::test_config_and_data_errors_come_before_any_compilation[loss]",
    # The trim of 2026-12-06 (the fast loop at 4:32 on 2 cores):
    # test_study_labels.py::test_labels_decide_follows_the_numbers and
    # test_pretrain.py (a pretrained run loaded into fine-tuning)
    "test_study_labels.py::test_quick_labels_study",
    # test_study_robustness.py::test_robustness_choose_is_the_best_mean_...
    "test_study_robustness.py::test_robustness_chooses_on_validation_before_reading_test",
    # test_bench_peers.py's forward and parameter-count tests
    "test_bench_peers.py::test_each_peers_step_lowers_the_loss_on_a_fixed_batch",
    # test_user_kinds.py::test_a_kind_in_a_users_file_trains_and_its_run_...
    "test_tutorial.py::test_the_tutorial_runs_as_written",
    # the [gru_T7_bidirectional_dropout] and [7-gru] cases
    "test_backward_rnn.py::test_manual_matches_autodiff_for_every_leaf[gru_T7]",
    "test_backward_rnn.py::test_bptt_matches_vjp_of_the_scan[1-gru]",
    # test_backward_rnn_lm.py's [lstm-2-0.4] and [tanh-1-0.0] (and the GRU
    # cell's own tests in test_backward_rnn.py)
    "test_backward_rnn_lm.py::test_manual_matches_autodiff_for_every_leaf[gru-1-0.0]",
    # test_models.py::test_gradient_check[cnn_1d_valid_hidden_dropout_avg]
    # and test_backward_cnn.py::test_gradient_check_has_the_manual_column[2d_digits_like]
    "test_models.py::test_gradient_check[cnn_digits_2d]",
    # the [damaged-config-json] and [read-only-out] cases
    "test_preemption_and_resume.py::test_filesystem_problems_are_one_line_and_exit_2[read-only-checkpoint-dir]",
    "test_preemption_and_resume.py::test_filesystem_problems_are_one_line_and_exit_2[parent-is-a-file]",
    # the [generate] case
    "test_stream.py::test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing[convert]",
    # the [autodiff] case
    "test_train.py::test_epoch_compiles_once_across_epochs[manual]",
    # [elu-cross_entropy-identity-True] (elu, float64 finite differences)
    "test_backprop.py::test_both_match_finite_differences_for_smooth_activations[elu-mse-identity-True]",
    # the [manual] case
    "test_explain.py::test_saliency_grad_x_input_and_smoothgrad_are_the_gradient[autodiff]",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if item.nodeid.split("tests/")[-1] in SLOW_IN_THE_FAST_LOOP:
      item.add_marker(pytest.mark.slow)


@pytest.fixture
def x64():
  """64-bit JAX for the duration of one test, restored afterwards.

  ``jax.config.update`` rather than the ``jax.enable_x64`` context manager:
  the context manager is thread-local, so arrays made in any other thread
  would stay float32. Jit caches are keyed on the flag, so functions
  compiled in float32 elsewhere are recompiled here, and back.
  """
  before = jax.config.jax_enable_x64
  jax.config.update("jax_enable_x64", True)
  try:
    yield
  finally:
    jax.config.update("jax_enable_x64", before)


@pytest.fixture
def getkey():
  """``getkey()`` returns a new key each call, split from a fixed seed."""
  counter = itertools.count()
  base = jax.random.key(1234)
  return lambda: jax.random.fold_in(base, next(counter))
