"""Type stubs for the private compiled module of the XLA FFI handlers (use sat_fast.functional)."""

from typing import Any

#: The jaxlib whose FFI headers the handlers were compiled against ("unknown" when given by path).
JAXLIB_VERSION: str

def handlers() -> dict[str, Any]:
    """The FFI handlers by target name, each a PyCapsule holding the handler's address."""
