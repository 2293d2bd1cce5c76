"""mlma: multilingual CTC speech recognition with ConMamba encoders."""

__version__ = "0.1.0"
