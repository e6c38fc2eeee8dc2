"""physiofm: a data-pipeline-first toolkit for physiological foundation models."""

__version__ = "0.1.0"
