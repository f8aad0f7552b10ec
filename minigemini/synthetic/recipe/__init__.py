"""``mgm train --recipe synthetic``: every step that rebuilds the default model from nothing, on a CPU.

``pipeline.py`` runs the steps of ``recipe.yaml`` in order (each resumes): write the world, CLIP-style encoder
pre-training (``encoders.py``), the HR tower's reading step (``reading.py``), word/region alignment of the visual
tokens (``alignment.py``), stage 1, the LLM's own chat answers (``chat_replay.py``), stage 2 and the drill step on
the HF Trainer (``minigemini.train``), and the export (``export.py``).
"""

from minigemini.synthetic.recipe.pipeline import SYNTHETIC_RECIPE, is_pipeline, run_synthetic_recipe

__all__ = ["SYNTHETIC_RECIPE", "is_pipeline", "run_synthetic_recipe"]
