"""`mgm init`: a new, untrained Mini-Gemini from standard parts."""

from __future__ import annotations

from minigemini.cli.options import add_dtype_argument
from minigemini.convert.from_parts import init_model
from minigemini.templates import TEMPLATE_NAMES


def add_parser(subparsers) -> None:
    """`mgm init --vision DIR --vision-aux DIR_OR_FILE --llm DIR --out DST [--image-size-aux N] [--hd]`."""
    parser = subparsers.add_parser(
        "init",
        help="build a new, untrained Mini-Gemini from a vision model, a ConvNeXt and a causal LM",
        description=(
            "Assemble a fresh Mini-Gemini: LR encoder (CLIP or SigLIP, transformers directory), HR encoder "
            "(ConvNeXt: transformers directory, or the open_clip file open_clip_pytorch_model.bin), any causal LM "
            "directory with its tokenizer. Mining layers and projector are newly initialised; train them with "
            "stage 1 before use."
        ),
    )
    parser.add_argument("--vision", required=True, metavar="DIR", help="CLIP or SigLIP model directory")
    parser.add_argument(
        "--vision-aux", required=True, metavar="DIR_OR_FILE", help="ConvNeXt directory, or an open_clip checkpoint file"
    )
    parser.add_argument("--llm", required=True, metavar="DIR", help="causal language model directory (with tokenizer)")
    parser.add_argument("--out", required=True, metavar="DST", help="new directory to write")
    parser.add_argument(
        "--image-size-aux",
        type=int,
        default=None,
        help="HR input size (default: 8x8 HR cells per LR token, 768 for CLIP-L/336; doubled with --hd)",
    )
    parser.add_argument("--hd", action="store_true", help="HD mode: 2x2 crops + a global view (5x the visual tokens)")
    parser.add_argument(
        "--template",
        choices=sorted(TEMPLATE_NAMES),
        default=None,
        help="release chat template (default: the LLM tokenizer's own template, else one matching its tokens)",
    )
    add_dtype_argument(parser, help="weights dtype (default: auto, the LLM's own)")
    parser.set_defaults(func=run)


def run(args) -> int:
    model, processor = init_model(
        args.vision,
        args.vision_aux,
        args.llm,
        args.out,
        image_size_aux=args.image_size_aux,
        hd=args.hd,
        chat_template=args.template,
        dtype=args.dtype,
    )
    config = model.config
    template = processor.template_name or "the tokenizer's own"
    print(
        f"Wrote an untrained Mini-Gemini to {args.out}: {config.vision_config.model_type} "
        f"{config.vision_config.image_size}px + ConvNeXt {config.image_size_aux}px + {config.text_config.model_type} "
        f"LLM, {config.image_seq_length} visual tokens per image, template {template}"
    )
    return 0
