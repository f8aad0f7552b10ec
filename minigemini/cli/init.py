"""`mgm init`: a new, untrained Mini-Gemini from standard parts, or (`--random tiny`) a random one, offline."""

from __future__ import annotations

from minigemini.cli.options import add_dtype_argument
from minigemini.convert.from_parts import init_model
from minigemini.convert.random import RANDOM_PRESETS
from minigemini.templates import TEMPLATE_NAMES


def add_parser(subparsers) -> None:
    """`mgm init --vision DIR --vision-aux DIR_OR_FILE --llm DIR --out DST [--image-size-aux N] [--hd]`, or
    `mgm init --random tiny --out DST`."""
    parser = subparsers.add_parser(
        "init",
        help="build a new, untrained Mini-Gemini from a vision model, a ConvNeXt and a causal LM",
        description=(
            "Assemble a fresh Mini-Gemini: LR encoder (CLIP or SigLIP, transformers directory), HR encoder "
            "(ConvNeXt: transformers directory, or the open_clip file open_clip_pytorch_model.bin), any causal LM "
            "directory with its tokenizer. Mining layers and projector are newly initialised; train them with "
            "stage 1 before use. Or, with --random tiny, a random model of the tests' size around SmolLM2's tokenizer "
            "(shipped with the demo extra), offline, to try the whole pipeline on in seconds."
        ),
    )
    parser.add_argument(
        "--random",
        choices=sorted(RANDOM_PRESETS),
        help="a random model of this size with SmolLM2's tokenizer (no --vision, --vision-aux, --llm)",
    )
    parser.add_argument("--vision", metavar="DIR", help="CLIP or SigLIP model directory")
    parser.add_argument(
        "--vision-aux", metavar="DIR_OR_FILE", help="ConvNeXt directory, or an open_clip checkpoint file"
    )
    parser.add_argument("--llm", metavar="DIR", help="causal language model directory (with tokenizer)")
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
    if args.random:
        return _random(args)
    missing = [flag for flag in ("vision", "vision_aux", "llm") if getattr(args, flag) is None]
    if missing:
        raise ValueError(
            f"the following arguments are required: {', '.join('--' + m.replace('_', '-') for m in missing)}"
        )
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


def _random(args) -> int:
    from minigemini.convert.random import random_model

    given = [flag for flag in ("vision", "vision_aux", "llm", "template") if getattr(args, flag) is not None]
    if given or args.hd or args.image_size_aux is not None:
        raise ValueError(f"--random builds every part itself: drop {', '.join(given) or '--hd / --image-size-aux'}")
    model, _ = random_model(args.random, _smollm2_tokenizer(), args.out)
    count = sum(parameter.numel() for parameter in model.parameters())
    print(f"Wrote a random {args.random} Mini-Gemini ({count:,} parameters, SmolLM2's tokenizer) to {args.out}")
    return 0


def _smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer: from the converted copy in the cache when there is one, else the GGUF."""
    from transformers import AutoTokenizer

    from minigemini.synthetic.smollm2 import SMOLLM2_DIRNAME, cache_dir, smollm2_gguf_path

    converted = cache_dir() / SMOLLM2_DIRNAME
    if (converted / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(converted)
    gguf = smollm2_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
