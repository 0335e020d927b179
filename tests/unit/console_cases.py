"""The console: our lines shown, third-party output in the run's log with one 'noticed' line, errors shown."""

import logging
import sys
import warnings

from nemo_spatial.console import NoticeBoard, run_console, step_line

TE_WARNING = "Transformer Engine and Apex are not installed. Falling back to Torch optimizers."


def _chatter() -> None:
    """What Megatron & co. print at start-up, through each of the channels they use."""
    warnings.warn(TE_WARNING, UserWarning, stacklevel=1)
    print("Params for bucket 1 (1110720 elements, 1110784 padded size):")
    print("\tlanguage_model.output_layer.weight (param.main_grad.dtype=torch.float32)")
    logging.getLogger("megatron.core.distributed").info("Setting up DistributedDataParallel with config ...")
    logging.getLogger("megatron.core.models").warning("Apex is not installed. Falling back to Torch Norm")
    sys.stderr.write("Generating train split: 64 examples\n")


def test_third_party_output_goes_to_the_log_with_one_line_that_says_what_was_noticed(tmp_path, capsys):
    with run_console(tmp_path, verbose=False):
        _chatter()
        logging.getLogger("nemo_spatial.trainer").info("checkpoint step_000002")
        logging.getLogger("vllm.engine").error("engine died: out of memory")
        sys.stderr.write("Traceback (most recent call last):\n  File 'x.py', line 1\nValueError: boom\n")
    out, err = capsys.readouterr()
    log = (tmp_path / "logs" / "train.log").read_text()
    for text in ("Falling back to Torch optimizers", "Params for bucket", "output_layer.weight", "DistributedData",
                 "Apex is not installed", "Generating train split"):  # fmt: skip
        assert text in log and text not in out + err
    assert "checkpoint step_000002" in out  # our own lines are shown
    assert "engine died: out of memory" in out  # a third-party error is never hidden
    assert "Traceback" in err and "ValueError: boom" in err and "File 'x.py'" in err  # nor a traceback
    noticed = [line for line in out.splitlines() if line.startswith("noticed:")]
    assert len(noticed) == 1
    assert "Transformer Engine not installed: local layer spec" in noticed[0]
    assert "Apex not installed" in noticed[0] and "Megatron DDP/optimizer config dump" in noticed[0]
    assert str(tmp_path / "logs" / "train.log") in noticed[0]
    assert sys.stdout is not None and "LogStream" not in type(sys.stdout).__name__  # streams restored


def test_verbose_shows_everything(tmp_path, capsys):
    with run_console(tmp_path, verbose=True):
        _chatter()
    out, _ = capsys.readouterr()
    assert "Params for bucket" in out and "Setting up DistributedDataParallel" in out
    assert "Apex is not installed" in out and TE_WARNING in out  # warnings through logging, shown
    assert "Apex is not installed" in (tmp_path / "logs" / "train.log").read_text()  # and still to the log


def test_other_ranks_log_to_their_own_file_and_show_only_warnings(tmp_path, capsys):
    with run_console(tmp_path, verbose=False, rank=1):
        logging.getLogger("nemo_spatial.trainer").info("rank 1 chatter")
        logging.getLogger("nemo_spatial.trainer").warning("rank 1 warns")
        _chatter()
    out, _ = capsys.readouterr()
    assert "rank 1 chatter" not in out and "rank 1 warns" in out and "noticed:" not in out
    assert "rank 1 chatter" in (tmp_path / "logs" / "rank1.log").read_text()


def test_notice_board_reports_each_kind_once(tmp_path):
    board = NoticeBoard(tmp_path / "train.log")
    board.record("UserWarning: Apex is not installed. Falling back to Torch Norm", True)
    board.record("Apex is not installed. Falling back to Torch Norm", True)
    assert board.new_summary() == f"noticed: Apex not installed: torch norms (x2); full log: {tmp_path / 'train.log'}"
    board.record("Apex is not installed.", True)
    assert board.new_summary() is None  # nothing new
    board.record("something odd happened", True)
    board.record("INFO chatter", False)
    assert "other third-party warnings" in (board.new_summary() or "")


def test_step_line_has_the_numbers_that_matter():
    metrics = {
        "reward/overall/mean": 0.4125, "reward/format/mean": 1.0, "reward/count/mean": 0.8,
        "reward/accuracy/mean": 0.5, "reward/spatial/mean": 0.31, "actor/kl_mean": 0.0021,
        "response/length/mean": 212.4, "timing/generate_s": 6.14, "timing/reward_s": 0.05,
        "timing/old_log_probs_s": 1.0, "timing/update_s": 5.5, "timing/sync_s": 1.2, "timing/step_s": 14.2,
        "throughput/tokens_per_s": 3120.7, "val/reward/overall/mean": 0.5,
    }  # fmt: skip
    line = step_line(3, 40, metrics)
    assert line == (
        "step 3/40 reward 0.412 (fmt 1.00 cnt 0.80 acc 0.50 sp 0.31) kl 2.1e-03 len 212 val 0.500"
        " | 14.2 s: gen 6.1 rew 0.1 old 1.0 upd 5.5 sync 1.2 | 3121 tok/s"
    )
    assert step_line(1, 2, {"timing/step_s": 1.0}) == "step 1/2 | 1.0 s"


def test_a_library_handler_on_the_terminal_is_pointed_at_the_log(tmp_path, capsys):
    lib = logging.getLogger("torch._fake_lib")
    handler = logging.StreamHandler(sys.stderr)  # as torch sets one up at import, on the terminal's stderr
    lib.addHandler(handler)
    lib.propagate = False
    try:
        with run_console(tmp_path, verbose=False):
            lib.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
        assert handler.stream is sys.stderr  # restored
    finally:
        lib.removeHandler(handler)
    out, err = capsys.readouterr()
    assert "No CUDA runtime" not in err and "noticed: no CUDA runtime: CPU" in out
    assert "No CUDA runtime is found" in (tmp_path / "logs" / "train.log").read_text()


def test_the_metrics_logger_prints_the_noticed_line_then_one_line_per_step(tmp_path, capsys):
    from nemo_spatial.logging_sinks import LoggingConfig, MetricsLogger

    cfg = LoggingConfig(tensorboard=False, wandb_mode="disabled", progress_bar=True)
    with run_console(tmp_path, verbose=False):
        metrics = MetricsLogger(cfg, tmp_path, "unit", total_steps=2)
        logging.getLogger("megatron.core.models").warning("Apex is not installed. Falling back to Torch Norm")
        metrics.log(1, {"reward/overall/mean": 0.25, "timing/step_s": 2.0, "timing/generate_s": 1.5})
        metrics.log(2, {"reward/overall/mean": 0.5, "timing/step_s": 1.0})
        metrics.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("noticed: Apex not installed: torch norms; full log: ")
    assert "step 1/2 reward 0.250 | 2.0 s: gen 1.5" in lines and "step 2/2 reward 0.500 | 1.0 s" in lines


def test_the_log_streams_hand_out_the_real_descriptor(tmp_path):
    import io

    class Terminal(io.StringIO):
        def fileno(self) -> int:
            return 2

    saved = sys.stderr
    sys.stderr = Terminal()
    try:
        with run_console(tmp_path, verbose=False):
            assert sys.stderr.fileno() == 2  # what faulthandler.enable() and subprocess ask for
    finally:
        sys.stderr = saved
