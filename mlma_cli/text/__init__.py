"""Text processing shared by tokenizer training, training targets and scoring."""
from mlma_cli.text.normalize import LANGUAGES, normalize, normalize_generic

__all__ = ["LANGUAGES", "normalize", "normalize_generic"]
