"""The Keras graph of a classifier.

Its settings, its registered layers, its loss and compilation.
"""
