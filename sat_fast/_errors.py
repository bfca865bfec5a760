"""The exception raised for input the kernels refuse (raised by ``sat_fast._core``)."""

from __future__ import annotations

__all__ = ["KernelInputError", "relocated", "with_suffix"]


class KernelInputError(ValueError):
    """Input the segment kernels cannot reduce exactly, located precisely.

    A ``ValueError``, so ``except ValueError`` keeps working; the attributes
    say where the problem is, so callers never parse the message.

    Attributes
    ----------
    kind : str
        ``"label"`` (a label outside ``[0, num_segments)`` that is not the
        ignore index), ``"nonfinite"`` (NaN or infinite saliency),
        ``"rle"`` (run lengths that do not cover the image) or ``"input"``
        (anything else the kernel refuses).
    image : int or None
        Index of the image in the batch.
    pixel : tuple of int or None
        ``(row, column)`` of the offending pixel.
    value : float, int or None
        The offending value (label or saliency).

    Examples
    --------
    >>> err = KernelInputError("label 7 is outside [0, 3)", kind="label", image=0, pixel=(1, 2), value=7)
    >>> isinstance(err, ValueError), err.image, err.pixel, err.value
    (True, 0, (1, 2), 7)
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "input",
        image: int | None = None,
        pixel: tuple[int, int] | None = None,
        value: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.image = image
        self.pixel = pixel
        self.value = value


def relocated(exc: ValueError, where: str, *, image: int | None = None, kernel_image: int | None = None) -> ValueError:
    """The same error, its message prefixed with (or its kernel image index replaced by) ``where``.

    The kernels number images within one call; callers that reduced a subset
    say which image of theirs it was. A :class:`KernelInputError` keeps its
    attributes, ``image`` becoming the caller's index.
    """
    message = str(exc)
    if kernel_image is not None and f"image {kernel_image}" in message:
        message = message.replace(f"image {kernel_image}", where, 1)
    else:
        message = f"{where}: {message}"
    if isinstance(exc, KernelInputError):
        return KernelInputError(message, kind=exc.kind, image=image, pixel=exc.pixel, value=exc.value)
    return ValueError(message)


def with_suffix(exc: ValueError, suffix: str) -> ValueError:
    """The same error with ``suffix`` appended to its message (attributes kept)."""
    message = f"{exc}{suffix}"
    if isinstance(exc, KernelInputError):
        return KernelInputError(message, kind=exc.kind, image=exc.image, pixel=exc.pixel, value=exc.value)
    return ValueError(message)
