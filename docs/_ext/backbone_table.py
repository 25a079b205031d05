"""Sphinx directives that render tables from transferkit's backbone registry at build time.

``.. backbone-table::`` lists every registered backbone with its facts;
``.. preprocessing-table::`` lists the preprocessing each family's weights expect;
``.. hub-family-table::`` summarizes the keras-hub families (when the ``hub`` extra is installed
at build time, as in CI). They read :func:`transferkit.list_backbones`,
:func:`transferkit.get_backbone` and keras-hub's preset metadata, so the tables cannot drift
from the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

import transferkit as tk
from transferkit.backbones import hub as _hub
from transferkit.preprocessing import PREPROCESSING_MODES


def _cell(content: str | nodes.Node) -> nodes.entry:
    entry = nodes.entry()
    paragraph = nodes.paragraph()
    paragraph += content if isinstance(content, nodes.Node) else nodes.Text(content)
    entry += paragraph
    return entry


def _text(content: str | nodes.Node) -> str:
    return content.astext() if isinstance(content, nodes.Node) else content


def _table(headers: Sequence[str], rows: Sequence[Sequence[str | nodes.Node]]) -> nodes.table:
    # Widths proportional to the longest text in each column, for builders that use them;
    # HTML sizes the columns to their content.
    table = nodes.table(classes=["colwidths-auto"])
    group = nodes.tgroup(cols=len(headers))
    table += group
    for index, header in enumerate(headers):
        longest = max([len(header)] + [len(_text(row[index])) for row in rows])
        group += nodes.colspec(colwidth=longest)
    head = nodes.thead()
    header_row = nodes.row()
    header_row.extend(_cell(header) for header in headers)
    head += header_row
    group += head
    body = nodes.tbody()
    for row in rows:
        body_row = nodes.row()
        body_row.extend(_cell(value) for value in row)
        body += body_row
    group += body
    return table


def _imagenet_sizes(backbone: tk.Backbone) -> str:
    if not backbone.imagenet_weights:
        return "no ImageNet weights"
    if backbone.weight_sizes is None:
        return "any"
    return ", ".join(str(size) for size in backbone.weight_sizes)


def _preprocessing(mode: str) -> str:
    return f"{mode}: {PREPROCESSING_MODES[mode]}"


BACKBONE_COLUMNS = (
    "Name",
    "Family",
    "Default size",
    "ImageNet weight sizes",
    "Min size",
    "Parameters",
    "Feature channels",
    "Preprocessing",
)


def backbone_rows() -> list[tuple[str, ...]]:
    """One row of :data:`BACKBONE_COLUMNS` per registered backbone, in name order."""
    rows = []
    for name in tk.list_backbones():
        backbone = tk.get_backbone(name)
        rows.append(
            (
                name,
                backbone.family,
                str(backbone.default_image_size),
                _imagenet_sizes(backbone),
                str(backbone.min_image_size),
                "—" if backbone.parameters is None else f"{backbone.parameters:,}",
                "—" if backbone.feature_channels is None else str(backbone.feature_channels),
                _preprocessing(backbone.preprocessing),
            )
        )
    return rows


class BackboneTable(SphinxDirective):
    """Every registered backbone, one row each."""

    def run(self) -> list[nodes.Node]:
        rows = [(nodes.literal(text=name), *rest) for name, *rest in backbone_rows()]
        return [_table(BACKBONE_COLUMNS, rows)]


class PreprocessingTable(SphinxDirective):
    """The preprocessing of each backbone family (a row per mode where a family mixes them)."""

    def run(self) -> list[nodes.Node]:
        groups: dict[tuple[str, str], list[str]] = {}
        for name in tk.list_backbones():
            backbone = tk.get_backbone(name)
            groups.setdefault((backbone.family, backbone.preprocessing), []).append(name)
        rows = [
            (family, ", ".join(names), _preprocessing(mode))
            for (family, mode), names in sorted(groups.items())
        ]
        return [_table(("Family", "Backbones", "Preprocessing inside the model"), rows)]


HUB_COLUMNS = ("Family", "Presets", "Default pooling", "Sizes", "Parameters", "Model cards")


def hub_family_rows() -> list[tuple[str, ...]]:
    """One row of :data:`HUB_COLUMNS` per keras-hub family; none without keras-hub."""
    if not _hub.available():
        return []
    families: dict[str, list[dict[str, Any]]] = {}
    for row in _hub.preset_rows():
        families.setdefault(row["family"], []).append(row)
    rows = []
    for family, presets in sorted(families.items()):
        spec = tk.get_backbone(presets[0]["name"])
        params = [row["parameters"] for row in presets if row["parameters"]]
        sizes = sorted({row["default_image_size"] for row in presets})
        cards = sorted({row["model_card"] for row in presets if row["model_card"]})
        rows.append(
            (
                family,
                str(len(presets)),
                spec.pooling,
                ("preset size: " if presets[0]["fixed_size"] else "any, default ")
                + ", ".join(map(str, sizes)),
                f"{min(params) / 1e6:,.1f}M to {max(params) / 1e6:,.1f}M" if params else "—",
                ", ".join(cards) or "—",
            )
        )
    return rows


class HubFamilyTable(SphinxDirective):
    """The keras-hub families, one row each (a note when keras-hub is not installed)."""

    def run(self) -> list[nodes.Node]:
        rows = hub_family_rows()
        if not rows:
            note = nodes.paragraph(
                text="keras-hub is not installed where these pages were built, so its "
                "families are not listed; pip install 'transferkit[hub]' and rebuild."
            )
            return [note]
        return [_table(HUB_COLUMNS, rows)]


def setup(app: Sphinx) -> dict[str, Any]:
    """Registers the directives."""
    app.add_directive("backbone-table", BackboneTable)
    app.add_directive("hub-family-table", HubFamilyTable)
    app.add_directive("preprocessing-table", PreprocessingTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
