"""Echovids: audio-by-example search. Shared code that every service imports."""

__version__ = "0.1.0"
