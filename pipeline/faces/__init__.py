"""Faces for the talking-head kind: read the face input, find and track the face, map the
video's frames onto the speech's length, and crop and paste back the face region.

CPU only (numpy, OpenCV, PyAV, Pillow); OpenCV's bundled Haar cascades need no download.
"""
