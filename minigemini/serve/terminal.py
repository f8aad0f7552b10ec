"""``mgm chat``: a multi-turn chat in the terminal, answers streamed token by token.

Lines are read from standard input one at a time, so a conversation can be piped in; end of input ends the chat.
Commands: ``/image PATH [PATH ...]`` attaches images to the next message, ``/gen`` toggles picture requests,
``/reset`` starts over, ``/quit`` (or ``/exit``) leaves, ``/help`` lists them.

With ``--gen`` every message asks for a picture the way the paper does (`` <GEN>`` after the user's text); when the
answer carries ``<h>prompt</h>`` (see ``minigemini.generation`` for the caption rule) the prompt is drawn by the
text-to-image backend, saved under ``--output-dir`` and its path printed.  With ``--ocr`` the text found in the
images of a message is appended to it (``Reference OCR token: ...``).  A bad image path or a too-long conversation
is reported in one line and the chat goes on.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from minigemini.image_processing import ImageLoadError, load_image

HELP = (
    "commands: /image PATH [PATH ...] attach images to your next message; /gen toggle picture requests; "
    "/reset start over; /quit leave"
)


def next_picture_path(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    number = 1
    while (directory / f"mgm-picture-{number:03d}.png").exists():
        number += 1
    return directory / f"mgm-picture-{number:03d}.png"


class ChatSession:
    """The state of one terminal conversation; ``handle(line)`` processes one input line."""

    def __init__(self, model, processor, args: argparse.Namespace, out: TextIO, load_image_generator: Callable):
        from minigemini.inference import Conversation

        self.model, self.processor, self.args, self.out = model, processor, args, out
        self._load_image_generator = load_image_generator  # called once, on the first picture
        self.conversation = Conversation(system=args.system)
        self.pending: list = []
        self.pending_names: list[str] = []
        self.gen = args.gen
        self._image_generator = None

    def say(self, text: str = "", end: str = "\n") -> None:
        self.out.write(text + end)
        self.out.flush()

    def attach(self, paths: list[str]) -> None:
        if not paths:
            self.say("usage: /image PATH [PATH ...]")
        for path in paths:
            try:
                self.pending.append(load_image(Path(path).expanduser()))
            except ImageLoadError as error:
                self.say(f"error: {error}")
                continue
            self.pending_names.append(path)
            self.say(f"[image] {path} attached to your next message")

    def image_generator(self):
        if self._image_generator is None:
            self._image_generator = self._load_image_generator()
        return self._image_generator

    def handle(self, line: str) -> bool:
        """Process one line; False means the chat should end."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self.command(line)
        self.turn(line)
        return True

    def command(self, line: str) -> bool:
        try:
            words = shlex.split(line)
        except ValueError as error:
            self.say(f"error: {error}")
            return True
        name, rest = words[0].lower(), words[1:]
        if name in ("/quit", "/exit", "/q"):
            return False
        if name == "/image":
            self.attach(rest)
        elif name == "/reset":
            self.conversation.reset()
            self.pending, self.pending_names = [], []
            self.say("[reset] new conversation")
        elif name == "/gen":
            self.gen = not self.gen
            self.say(f"[gen] picture requests {'on' if self.gen else 'off'}")
        elif name == "/help":
            self.say(HELP)
        else:
            self.say(f"unknown command {name}; {HELP}")
        return True

    def turn(self, text: str) -> None:
        """One chat turn (``inference.Conversation``): the message and its images, the answer streamed, the picture."""
        from minigemini.engine import run_batch

        images, self.pending, self.pending_names = self.pending, [], []
        self.ask(text, images)
        shown: list[str] = []

        def show(piece: str) -> None:
            shown.append(piece)
            self.say(piece, end="")

        args = self.args
        try:
            request = self.conversation.request(
                self.model, self.processor, args.max_new_tokens, args.temperature, args.top_p, on_text=show
            )
        except ValueError as error:
            self.conversation.pop_user()
            self.say(f"error: {error}")
            return
        self.say("assistant: ", end="")
        try:
            run_batch(self.model, self.processor, [request])
        except KeyboardInterrupt:  # Ctrl-C stops this answer, not the chat
            self.say(" [interrupted]")
            self.conversation.add_assistant("".join(shown).strip())
            return
        self.say()
        self.conversation.add_assistant(request.text)
        if self.gen:
            self.picture(request.text)

    def ask(self, text: str, images: list) -> None:
        """Add the user's turn, with the OCR line of its images under ``--ocr`` (without it when OCR fails)."""
        try:
            hint = self.conversation.add_user(text, images, ocr=self.args.ocr, generate_image=self.gen)
        except (ImportError, ValueError) as error:  # only OCR can fail here: the images are loaded
            self.say(f"error: OCR failed, asking without it: {error}")
            self.conversation.add_user(text, images, generate_image=self.gen)
            return
        if hint:
            self.say(f"[ocr] {hint}")

    def picture(self, answer: str) -> None:
        from minigemini.inference import draw

        try:
            prompt, picture = draw(
                answer, lambda prompt, **options: self.image_generator()(prompt, **options), seed=self.args.seed
            )
        except ValueError as error:
            self.say(f"error: {error}")
            return
        if prompt is None:
            self.say("[picture] the answer has no <h>prompt</h>: no picture")
            return
        path = next_picture_path(self.args.output_dir)
        picture.save(path)
        self.say(f"[picture] saved {path} ({picture.width}x{picture.height}) for the prompt: {prompt}")
