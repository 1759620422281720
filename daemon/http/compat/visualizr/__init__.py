"""Visualizr's personality (personality.py) and the modules only it uses: its assets, model
catalogue, status translation, system figures and WebSocket pushes."""

from daemon.http.compat.visualizr.personality import PERSONALITY

__all__ = ["PERSONALITY"]
