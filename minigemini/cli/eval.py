"""``mgm eval``: run a model over a benchmark (resumable, shardable) and score it; ``mgm eval merge`` joins
shards and scores; ``mgm eval synthetic`` writes the offline synthetic benchmark; ``mgm eval list``; ``mgm eval
report`` tabulates scored runs.  What answers is an engine (transformers, vllm, endpoint: docs/evaluation.md).

    mgm eval --model M --bench textvqa --data llava_textvqa_val_v051_ocr.jsonl \\
             --annotations TextVQA_0.5.1_val.json --image-dir train_images --out runs/textvqa
    mgm eval --model M --bench mmbench --data MMBench_DEV_EN.tsv --shard 0/4 --out runs/mmb   # x4, then:
    mgm eval merge --out runs/mmb
    mgm eval --model M --bench mmvet --data mm-vet/ --judge-url http://localhost:8000/v1 --judge-model gpt-4-0613
    mgm eval --engine vllm --model M --bench mmstar --data MMStar/ --out runs/mmstar      # in the vLLM environment
    mgm eval --endpoint http://host:8000/v1 --concurrency 16 --bench docvqa --data val_v1.0.json --out runs/docvqa
    mgm eval report runs/ --output runs/table                                              # table.md + table.json

Every run reports the questions in the benchmark file, how many were scored, unreadable and unparsed; when a
question was not scored the score is marked partial and the exit status is 3 unless --allow-partial
(report.py).  How each benchmark is read and scored, and where that rule comes from: minigemini/evaluation/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minigemini.cli.options import add_dtype_argument, add_quantize_arguments, model_directory

__all__ = ["add_parser", "run_command"]


def _add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("LLM judge (any OpenAI-compatible endpoint; MM-Vet needs one)")
    group.add_argument(
        "--judge-url", default=None, help="base URL, e.g. https://api.openai.com/v1 (POST {url}/chat/completions)"
    )
    group.add_argument("--judge-model", default=None, help="model name sent to the endpoint, e.g. gpt-4-0613")
    group.add_argument("--judge-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    group.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per request")


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (which one when: docs/evaluation.md)")
    group.add_argument(
        "--engine",
        choices=("transformers", "vllm", "endpoint"),
        default=None,
        help="transformers (default), vllm (in process; the vLLM environment), endpoint (implied by --endpoint)",
    )
    group.add_argument(
        "--endpoint", default=None, help="OpenAI-compatible server answering the questions, e.g. http://host:8000/v1"
    )
    group.add_argument("--endpoint-model", default=None, help="model name sent to it (default: the first it lists)")
    group.add_argument("--endpoint-key-env", default="OPENAI_API_KEY", help="environment variable holding its key")
    group.add_argument("--endpoint-timeout", type=float, default=120.0, help="seconds per request")
    group.add_argument("--endpoint-retries", type=int, default=2, help="retries of a failed request")
    group.add_argument("--concurrency", type=int, default=8, help="requests in flight to the endpoint")
    group.add_argument(
        "--data-parallel", type=int, default=1, help="vLLM engine replicas, one process and one GPU each"
    )
    group.add_argument("--max-model-len", type=int, default=None, help="vLLM's context length (default: the model's)")
    group.add_argument(
        "--vllm-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another keyword argument of vllm.LLM (VALUE read as JSON when it parses), e.g. enforce_eager=true",
    )


def _add_allow_partial(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="exit 0 even when some questions of the benchmark were not scored (the score is still marked partial)",
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on a benchmark (TextVQA, MMBench, MME, MM-Vet, MMMU, MathVista, POPE, ...)",
        description="Run a model over a local copy of a benchmark and score it the way its authors do.",
    )
    parser.add_argument("--model", help="model directory (MiniGeminiForConditionalGeneration + MiniGeminiProcessor)")
    parser.add_argument("--bench", help="benchmark name (see `mgm eval list`)")
    parser.add_argument("--data", help="benchmark file or folder in the format its authors distribute")
    parser.add_argument("--annotations", default=None, help="file/folder with the answers when they are kept apart")
    parser.add_argument("--image-dir", default=None, help="folder that relative image paths are relative to")
    parser.add_argument("--split", default=None, help="split of a parquet / save_to_disk dataset")
    parser.add_argument("--out", default=None, help="output folder (default: eval-<bench>)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument(
        "--shard",
        default=None,
        help="i/n: this process answers every n-th question from i (default: RANK/WORLD_SIZE under torchrun, else 0/1)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="questions per batch (default: 8; vLLM 256; endpoint 4 x concurrency)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's (128 or 1024)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    add_dtype_argument(
        parser, help="auto: bf16 on CUDA, fp16 on MPS; on a CPU bf16 where it has bf16 kernels, else fp32"
    )
    parser.add_argument("--chat-template", default=None, help="override the processor's chat template")
    add_quantize_arguments(parser)
    parser.add_argument("--retry-errors", action="store_true", help="ask again the questions that failed before")
    parser.add_argument("--synthetic-n", type=int, default=40, help="questions of `--bench synthetic` without --data")
    _add_allow_partial(parser)
    _add_engine_arguments(parser)
    _add_judge_arguments(parser)
    parser.set_defaults(func=run_command)

    commands = parser.add_subparsers(dest="eval_command", metavar="{merge,synthetic,list,report}")
    merge = commands.add_parser("merge", help="join the shard outputs in --out and (re)score them")
    merge.add_argument("--out", required=True)
    merge.add_argument(
        "--rescore",
        action="store_true",
        help="re-read the benchmark data with this version's loaders before scoring "
        "(runs of older versions always are)",
    )
    _add_allow_partial(merge)
    _add_judge_arguments(merge)
    merge.set_defaults(func=run_command)
    synthetic = commands.add_parser("synthetic", help="write the synthetic benchmark (LLaVA question JSONL + images)")
    synthetic.add_argument("directory")
    synthetic.add_argument("--n", type=int, default=40)
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.set_defaults(func=run_command)
    listing = commands.add_parser("list", help="list the benchmarks")
    listing.set_defaults(func=run_command)
    report = commands.add_parser("report", help="one table (markdown + JSON) of the scored runs under folders")
    report.add_argument("folders", nargs="+", help="run folders, or folders holding them")
    report.add_argument("--output", default="eval-report", help="writes OUTPUT.md and OUTPUT.json")
    report.set_defaults(func=run_command)


def _judge(args):
    if not args.judge_url and not args.judge_model:
        return None
    from minigemini.evaluation.judge import Judge, JudgeConfig
    from minigemini.evaluation.runner import EvalError

    if not (args.judge_url and args.judge_model):
        raise EvalError("a judge needs both --judge-url and --judge-model")
    out = Path(args.out) if getattr(args, "out", None) else None
    return Judge(
        JudgeConfig(
            base_url=args.judge_url,
            model=args.judge_model,
            api_key_env=args.judge_key_env,
            timeout=args.judge_timeout,
            cache_path=None if out is None else out / "judge-cache.jsonl",
        )
    )


def _report(scores: dict, out: Path, allow_partial: bool) -> int:
    """Print the scores (metrics and counts on stdout, a partial score's warning on stderr); the exit status."""
    from minigemini.evaluation.report import exit_status, report_lines

    stdout, stderr = report_lines(scores)
    for line in stdout:
        print(line)
    print(f"scores: {out / 'scores.json'}")
    for line in stderr:
        print(line, file=sys.stderr)
    return exit_status(scores, allow_partial)


def _list(args) -> int:
    from minigemini.evaluation.benchmarks import BENCHMARKS

    width = max(10, *(len(name) for name in BENCHMARKS))
    for benchmark in BENCHMARKS.values():
        print(f"{benchmark.name:{width}s} {benchmark.description}")
    return 0


def _write_synthetic(args) -> int:
    from minigemini.synthetic.benchmark import write_synthetic_benchmark

    print(write_synthetic_benchmark(args.directory, n=args.n, seed=args.seed))
    return 0


def _merge(args) -> int:
    from minigemini.evaluation.runner import score_run

    scores = score_run(args.out, judge=_judge(args), rescore=args.rescore)
    return _report(scores, Path(args.out), args.allow_partial)


def _benchmark_data(benchmark, args, out: Path) -> str | Path:
    """``--data``, or the data a benchmark that writes its own (the synthetic set) keeps under ``out``."""
    from minigemini.evaluation.runner import EvalError

    data = args.data
    if data is None:
        if benchmark.default_data is None:
            raise EvalError(f"--bench {benchmark.name} needs --data")
        data = benchmark.default_data(out, args.synthetic_n)
    if not Path(data).exists():
        raise FileNotFoundError(f"benchmark data not found: {data}")
    return data


def _run_config(args, bench: str, data: str | Path, out: Path, engine: str, batch_size: int, model: str):
    from minigemini.evaluation.runner import RunConfig, parse_shard, shard_from_env

    shard = parse_shard(args.shard) if args.shard else shard_from_env()
    return RunConfig(
        bench=bench,
        data=str(data),
        out=out,
        annotations=args.annotations,
        image_dir=args.image_dir,
        split=args.split,
        limit=args.limit,
        shard=shard,
        batch_size=batch_size,
        max_new_tokens=args.max_new_tokens,
        model=model,
        retry_errors=args.retry_errors,
        engine=engine,
    )


def _engine_options(args):
    """The engine ``--engine`` / ``--endpoint`` name, and the options it is opened with."""
    from minigemini.evaluation.engines import EngineOptions
    from minigemini.evaluation.runner import EvalError, parse_shard

    name = args.engine or ("endpoint" if args.endpoint else "transformers")
    if args.shard:
        parse_shard(args.shard)  # a bad --shard is found before the model loads
    if args.batch_size is not None and args.batch_size < 1:
        raise EvalError("--batch-size must be >= 1")
    if name != "endpoint" and not args.model:
        raise EvalError(f"--engine {name} needs --model")
    if args.quantize and name != "transformers":
        raise EvalError(f"--quantize loads the model for --engine transformers; --engine {name} does not load it here")
    return name, EngineOptions(
        model=str(model_directory(args.model)) if args.model and name != "endpoint" else args.model,
        load={
            "device": args.device,
            "dtype": args.dtype,
            "chat_template": args.chat_template,
            "quantize": args.quantize,
        },
        batch_size=args.batch_size,
        endpoint=args.endpoint,
        endpoint_model=args.endpoint_model,
        api_key_env=args.endpoint_key_env,
        concurrency=args.concurrency,
        timeout=args.endpoint_timeout,
        retries=args.endpoint_retries,
        data_parallel=args.data_parallel,
        max_model_len=args.max_model_len,
        vllm_args=dict(_key_value(item) for item in args.vllm_arg),
    )


def _answer(args, bench: str, data: str | Path, out: Path):
    """Open the engine and answer this shard's questions with it (with ``--data-parallel N`` on vLLM: every shard,
    in N replicas); (the run's config, its summary)."""
    from minigemini.evaluation.engines import open_engine
    from minigemini.evaluation.runner import run_engine

    name, options = _engine_options(args)
    if name == "vllm" and options.data_parallel > 1:
        from minigemini.evaluation.engines.vllm import BATCH_SIZE, run_replicas

        config = _run_config(args, bench, data, out, name, options.batch_size or BATCH_SIZE, options.model)
        return config, run_replicas(options, config)
    engine = open_engine(name, options)
    try:
        config = _run_config(args, bench, data, out, engine.name, engine.batch_size, engine.model_name)
        return config, run_engine(engine, config)
    finally:
        engine.close()


def _key_value(item: str) -> tuple[str, object]:
    """``KEY=VALUE`` of ``--vllm-arg``: VALUE as JSON where it parses (true, 0.8, {"image": 2}), else the string."""
    import json

    from minigemini.evaluation.runner import EvalError

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise EvalError(f"--vllm-arg takes KEY=VALUE, got {item!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _run(args) -> int:
    from minigemini.evaluation.benchmarks import get_benchmark
    from minigemini.evaluation.runner import EvalError, score_run, shards_complete

    if not args.bench or not (args.model or args.endpoint):
        raise EvalError(
            "mgm eval needs --model and --bench (and --data, except for --bench synthetic; with --endpoint URL, "
            "--model is not needed)"
        )
    benchmark = get_benchmark(args.bench)
    out = Path(args.out or f"eval-{benchmark.name}")
    data = _benchmark_data(benchmark, args, out)
    judge = _judge(args)
    if benchmark.needs_judge and judge is None:
        print(
            f"mgm eval: note: {benchmark.name} is scored by an LLM judge; without --judge-url/--judge-model only "
            "the answers are written (score later with `mgm eval merge --out ... --judge-url ... --judge-model ...`)",
            file=sys.stderr,
        )
    config, summary = _answer(args, benchmark.name, data, out)
    index, count = config.shard
    if count > 1 and not shards_complete(out):
        print(
            f"shard {index}/{count} done ({summary['answered']} answered, {summary['errors']} errors); "
            f"when all shards are done: mgm eval merge --out {out}"
        )
        return 0
    return _report(score_run(out, judge=judge), out, args.allow_partial)


def _leaderboard(args) -> int:
    from minigemini.evaluation.leaderboard import write_report

    md, js, markdown = write_report(args.folders, args.output)
    print(markdown, end="")
    print(f"report: {md} {js}")
    return 0


_COMMANDS = {"list": _list, "synthetic": _write_synthetic, "merge": _merge, "report": _leaderboard}


def run_command(args) -> int:
    return _COMMANDS.get(args.eval_command, _run)(args)
