"""Backbones.

The spec, the registry and its plugins, keras-hub presets, freezing, pooling and preprocessing.
"""
