"""Training data: LLaVA-format conversation files -> batches (records, label masks, dataset, collator, sampler, and
the one skip shape and counter that data tools share)."""

from minigemini.data.collator import DATA_STATS_KEY, MiniGeminiCollator
from minigemini.data.dataset import SupervisedDataset
from minigemini.data.labels import ConversationEncoder
from minigemini.data.records import DataError, Record, read_records
from minigemini.data.sampler import ModalityLengthGroupedSampler, modality_length_grouped_indices
from minigemini.data.skips import SKIP_REASONS, Skip, SkipCounter
from minigemini.modeling import IGNORE_INDEX

__all__ = [
    "DATA_STATS_KEY",
    "IGNORE_INDEX",
    "SKIP_REASONS",
    "ConversationEncoder",
    "DataError",
    "MiniGeminiCollator",
    "ModalityLengthGroupedSampler",
    "Record",
    "Skip",
    "SkipCounter",
    "SupervisedDataset",
    "modality_length_grouped_indices",
    "read_records",
]
