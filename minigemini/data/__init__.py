"""Training data: LLaVA-format conversation files -> batches (records, label masks, dataset, collator, sampler)."""

from minigemini.data.collator import DATA_STATS_KEY, MiniGeminiCollator
from minigemini.data.dataset import SupervisedDataset
from minigemini.data.labels import ConversationEncoder
from minigemini.data.records import SKIP_REASONS, DataError, Record, SkipCounter, read_records
from minigemini.data.sampler import ModalityLengthGroupedSampler, modality_length_grouped_indices
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
    "SkipCounter",
    "SupervisedDataset",
    "modality_length_grouped_indices",
    "read_records",
]
