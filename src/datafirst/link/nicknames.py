"""Nickname groups: which forenames are variants of one another, from a public list.

The list (reference/nicknames.csv, see reference/SOURCES.md) pairs a name with each of its
nicknames. A forename belongs to the group of every name it is a nickname of, and to its own
group when it has nicknames itself: William -> {william}; Bill -> {william}; Will -> {wilbur,
wilfred, william, ...}. Two forenames are variants when their groups meet. Groups are not
merged transitively: Al is a nickname of both Albert and Alfred, which are not each other's.
"""

from __future__ import annotations

from importlib import resources

import pyarrow.csv as pacsv

from ..engine import Engine

LIST_FILE = "nicknames.csv"
GROUPS_TABLE = "link_name_groups"


def load_groups(engine: Engine) -> str:
    """Create the table (name, groups) in the engine; returns its name."""
    with resources.as_file(resources.files(__package__) / "reference" / LIST_FILE) as path:
        pairs = pacsv.read_csv(path)
    engine.register("link_nickname_pairs", pairs)
    engine.execute(f"""CREATE OR REPLACE TABLE {GROUPS_TABLE} AS
        SELECT name, list_sort(list(DISTINCT grp)) AS groups FROM (
            SELECT lower(name1) AS name, lower(name1) AS grp FROM link_nickname_pairs
            UNION ALL SELECT lower(name2), lower(name1) FROM link_nickname_pairs)
        GROUP BY name""")
    engine.unregister("link_nickname_pairs")
    return GROUPS_TABLE
