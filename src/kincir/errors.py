"""The root of kincir's error vocabulary."""

__all__ = ["KincirError"]


class KincirError(Exception):
    """Base class of every error kincir raises on purpose."""

    __module__ = "kincir"
