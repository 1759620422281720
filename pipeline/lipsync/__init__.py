"""Lip-sync backends for talking heads: Wav2Lip and MuseTalk 1.5, as registry models.

`layout` tells a folder's backend without torch (the daemon uses it); `load` imports the
backend and builds its `LipSync` object (the worker's ModelStore calls it).
"""
