"""Options shared by ``mgm chat``, ``mgm serve`` and ``mgm web``: which model, where, in which precision."""

from __future__ import annotations

import argparse

from minigemini.precision import dtype_name
from minigemini.quantization import SCHEMES
from minigemini.templates import TEMPLATE_NAMES
from minigemini.text_to_image import BACKEND_CHOICES


def dtype_choice(value: str) -> str:
    """argparse type of every --dtype: any spelling of the one vocabulary (bf16 or bfloat16, ...) -> its short name."""
    try:
        return dtype_name(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_dtype_argument(parser, default: str | None = "auto", help: str = "", auto: bool = True) -> None:
    """`--dtype {auto,bf16,fp16,fp32}` (long names such as bfloat16 are accepted too)."""
    metavar = "{auto,bf16,fp16,fp32}" if auto else "{bf16,fp16,fp32}"

    def choice(value: str) -> str:
        name = dtype_choice(value)
        if name == "auto" and not auto:
            raise argparse.ArgumentTypeError("auto is not a choice here; use bf16, fp16 or fp32")
        return name

    parser.add_argument("--dtype", type=choice, default=default, metavar=metavar, help=help)


def add_quantize_arguments(parser) -> None:
    """``--quantize {nf4,int8,...}`` (the LLM only, on CPU or CUDA) and the release's ``--load-4bit``/``--load-8bit``,
    its aliases for nf4 and int8; all three set ``args.quantize``."""
    choices = parser.add_mutually_exclusive_group()
    schemes = "; ".join(f"{name}: {scheme.help}" for name, scheme in SCHEMES.items())
    choices.add_argument("--quantize", choices=list(SCHEMES), default=None, help=f"quantise the LLM ({schemes})")
    choices.add_argument("--load-4bit", dest="quantize", action="store_const", const="nf4", help="--quantize nf4")
    choices.add_argument("--load-8bit", dest="quantize", action="store_const", const="int8", help="--quantize int8")


#: The name ``--model`` reads as the default model (``synthetic.default_model.default_checkpoint``).
DEFAULT_MODEL_NAME = "default"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL_NAME,
        help="a Mini-Gemini directory (model + processor), or `default`: the model trained on the synthetic world",
    )
    group.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:1, mps")
    add_dtype_argument(
        group, help="auto: bf16 on CUDA, fp16 on MPS; on a CPU bf16 where it has bf16 kernels, else fp32"
    )
    add_quantize_arguments(group)
    group.add_argument(
        "--template",
        default=None,
        choices=TEMPLATE_NAMES,
        help="chat template of the release to use instead of the processor's saved one",
    )


def add_generation_arguments(parser: argparse.ArgumentParser, temperature: float = 0.2) -> None:
    group = parser.add_argument_group("generation")
    group.add_argument("--max-new-tokens", type=int, default=512)
    group.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    group.add_argument("--top-p", type=float, default=1.0)


def add_text_to_image_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pictures")
    group.add_argument(
        "--image-generator",
        default="auto",
        metavar="BACKEND",
        help=f"text-to-image backend: {', '.join(BACKEND_CHOICES)} or a diffusers pipeline id/directory "
        "(auto: SDXL when it is in the local Hugging Face cache, else the offline synthetic renderer)",
    )
    group.add_argument("--image-steps", type=int, default=None, help="diffusion steps (default: the pipeline's)")


def model_directory(model: str) -> str:
    """``--model``'s directory: the default model's plain checkpoint (written once into the cache) for ``default``."""
    if model != DEFAULT_MODEL_NAME:
        return model
    from minigemini.synthetic.default_model import default_checkpoint

    return str(default_checkpoint())


def load_model(args: argparse.Namespace):
    """(model, processor) from the common options; a readable error for a missing directory or bad device."""
    from minigemini.loading import load_pretrained

    return load_pretrained(
        model_directory(args.model),
        device=args.device,
        dtype=args.dtype,
        quantization=args.quantize,
        chat_template=args.template,
    )


def load_image_generator(args: argparse.Namespace):
    from minigemini.text_to_image import load_text_to_image

    kwargs = {}
    if args.image_steps is not None and args.image_generator not in ("synthetic",):
        kwargs["num_inference_steps"] = args.image_steps
    device = None if args.device == "auto" else args.device
    return load_text_to_image(args.image_generator, device=device, **kwargs)
