"""What a job kind declares (contract/kinds.py), under the name plugins import."""

from contract.kinds import EvenSide, InputSpec, KindSpec, MediaType

__all__ = ["EvenSide", "InputSpec", "KindSpec", "MediaType"]
