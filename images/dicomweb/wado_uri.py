"""WADO-URI (PS3.18 9) for older viewers."""

from .pending import pending

wado = pending
