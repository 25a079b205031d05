"""Labeled image data: folders of class subfolders, CSV tables and DataFrames, image files.

:func:`from_directory` reads the recipe's ``train/`` and ``validation/`` folders,
:func:`~transferkit.data.from_csv` and :func:`~transferkit.data.from_dataframe` read tables of
file names and labels, and :func:`from_files` and :func:`load_images` read images to predict.
The code lives in ``transferkit.data.folders`` and ``transferkit.data.csv_tables``; the
subpackage also holds the checks every input goes through (``transferkit.data.inputs``).
"""

from transferkit.data.csv_tables import from_csv, from_dataframe
from transferkit.data.folders import (
    IMAGE_EXTENSIONS,
    DirectoryData,
    check_images,
    from_directory,
    from_files,
    list_images,
    load_images,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "DirectoryData",
    "check_images",
    "from_csv",
    "from_dataframe",
    "from_directory",
    "from_files",
    "list_images",
    "load_images",
]
