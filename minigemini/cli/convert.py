"""`mgm convert`: a published MGM release checkpoint into this package's format."""

from __future__ import annotations

from minigemini.cli.options import add_dtype_argument
from minigemini.convert.release import convert_and_save
from minigemini.templates import TEMPLATE_NAMES


def add_parser(subparsers) -> None:
    """`mgm convert SRC DST [--template NAME] [--dtype DTYPE] [--with-code]`."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a published Mini-Gemini (MGM) checkpoint to this package's format",
        description=(
            "Convert a published Mini-Gemini / MGM release checkpoint (sharded safetensors or .bin, config.json with "
            "mm_* keys) into a directory that MiniGeminiForConditionalGeneration.from_pretrained and "
            "MiniGeminiProcessor.from_pretrained load. Vision towers must be inside the checkpoint, as released."
        ),
    )
    parser.add_argument("source", metavar="SRC", help="release checkpoint directory (or a hub id, with a network)")
    parser.add_argument("destination", metavar="DST", help="new directory to write (must not exist or be empty)")
    parser.add_argument(
        "--template",
        choices=sorted(TEMPLATE_NAMES),
        default=None,
        help="chat template to store in the processor (default: chosen from the tokenizer and LLM, as released)",
    )
    add_dtype_argument(parser, help="dtype of the saved weights (default: auto, the checkpoint's own)")
    parser.add_argument(
        "--with-code",
        action="store_true",
        help="also write the model and processor code (Hub custom code: loads with trust_remote_code=True "
        "where minigemini is not installed)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    model, processor = convert_and_save(args.source, args.destination, args.template, args.dtype, args.with_code)
    config = model.config
    parts = [
        f"{config.text_config.model_type} LLM",
        f"{config.image_seq_length} visual tokens per image",
        "HD" if config.image_grid > 1 else f"HR {config.image_size_aux}px",
        f"image_token_id={config.image_token_id}",
        f"template={processor.template_name}" if processor is not None else "no tokenizer found: model only",
    ]
    print(f"Converted {args.source} -> {args.destination} ({', '.join(parts)})")
    return 0
