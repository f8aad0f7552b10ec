"""Training data: LLaVA-format conversation files -> batches (records, label masks, dataset, collator, sampler)."""

from .collator import DATA_STATS_KEY, MiniGeminiCollator
from .dataset import SupervisedDataset
from .labels import IGNORE_INDEX, ConversationEncoder
from .records import SKIP_REASONS, DataError, Record, SkipCounter, read_records
from .sampler import ModalityLengthGroupedSampler, modality_length_grouped_indices

__all__ = [
    "DATA_STATS_KEY",
    "IGNORE_INDEX",
    "SKIP_REASONS",
    "ConversationEncoder",
    "DataError",
    "MiniGeminiCollator",
    "ModalityLengthGroupedSampler",
    "Record",
    "SkipCounter",
    "SupervisedDataset",
    "modality_length_grouped_indices",
    "read_records",
]
