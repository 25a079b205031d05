"""Files: saving and loading classifiers, and exports for serving."""
