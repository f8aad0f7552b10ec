"""Does the default model still chat? Plain-English questions with keywords, asked by the ablation benchmark and
the tests; none of them is among the recipe's chat-step prompts, so a pass is not a memorised answer."""

__all__ = ["CHAT_CHECKS", "passes"]

#: Plain-English questions and words a sensible answer contains (any one of them).
CHAT_CHECKS = (
    ("What is the capital of France?", ("paris",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("Which planet do we live on?", ("earth",)),
    ("What do bees make?", ("honey",)),
    ("What is the opposite of hot?", ("cold",)),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What do you call frozen water?", ("ice",)),
    ("What is the capital of England?", ("london",)),
    ("What is the capital of the United States?", ("washington",)),
    ("What is the main language spoken in Brazil?", ("portuguese",)),
    ("How many legs does a cat have?", ("four", "4")),
    ("How many sides does a square have?", ("four", "4")),
    ("What is five plus five?", ("ten", "10")),
    ("How many hours are there in two days?", ("48", "forty-eight")),
    ("What is the freezing point of water in Fahrenheit?", ("32",)),
    ("What do cows give us to drink?", ("milk",)),
    ("What colour is a lemon?", ("yellow",)),
    ("What colour is coal?", ("black",)),
    ("What is the opposite of day?", ("night",)),
    ("What is the opposite of wet?", ("dry",)),
    ("What do birds use to fly?", ("wing",)),
    ("Which animal has a long trunk?", ("elephant",)),
    ("Which animal says woof?", ("dog",)),
    ("What do we call a baby cow?", ("calf",)),
    ("Where do fish live?", ("water", "sea", "ocean", "river", "lake")),
    ("Which organ pumps blood around the body?", ("heart",)),
    ("What season is the coldest?", ("winter",)),
    ("What tool do you use to cut paper?", ("scissors",)),
    ("What meal do people eat in the morning?", ("breakfast",)),
    ("What shape is a ball?", ("round", "sphere")),
    ("Which is bigger, an elephant or a mouse?", ("elephant",)),
)


def passes(answer: str | None, keywords: tuple[str, ...]) -> bool:
    """Whether an answer holds any of the keywords (case-insensitive)."""
    return any(keyword in (answer or "").lower() for keyword in keywords)
