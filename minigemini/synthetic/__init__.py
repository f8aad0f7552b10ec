"""A tiny synthetic world: scenes of coloured shapes and words, described in short English and drawn exactly.

It lets the whole picture-generation path run offline and be checked pixel by pixel (``render.py``).
"""

from .render import COLOURS, SHAPES, RenderedScene, SceneSpec, ShapeSpec, draw_scene, parse_description, render

__all__ = ["COLOURS", "SHAPES", "RenderedScene", "SceneSpec", "ShapeSpec", "draw_scene", "parse_description", "render"]
