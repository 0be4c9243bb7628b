"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class HanascError(Exception):
    """Bad input (file, node, option): the message names it in one line."""

    exit_code = 2


class ModelFileError(HanascError):
    """The model file is missing, unreadable, not ONNX, or unsafe."""


class UnsupportedOperatorError(HanascError):
    """The graph holds an operator the importer cannot convert."""


class InputShapeError(HanascError):
    """An input shape is symbolic without --input-shape, or --input-shape is malformed."""


class ModelSizeError(ModelFileError):
    """A declared, stored or inferred tensor exceeds the documented limit (refused before allocating)."""


class CalibrationError(HanascError):
    """Calibration data that does not fit the model, or a malformed ranges file."""
