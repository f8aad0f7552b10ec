"""Builders shared by several test folders: tiny saved models, processors, data files, release checkpoints, the vLLM
environment and the `mgm` front door. A helper used by one folder only lives in that folder."""
