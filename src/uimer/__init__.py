"""uimer: train NLP models to look where they should (interpretation-method alignment with gold rationales)."""

__version__ = "0.1.0"
