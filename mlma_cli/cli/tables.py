"""Small rich-table helpers shared by the command modules."""
from __future__ import annotations

from typing import Any, Mapping


def key_value_table(title: str, items: Mapping[str, Any], key: str = "item", value: str = "value"):
    """A two-column rich Table of ``items`` (values shown with str())."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column(key)
    table.add_column(value)
    for k, v in items.items():
        table.add_row(str(k), str(v))
    return table
