"""Nickname groups: which forenames are variants of one another, from a public list.

The list (reference/nicknames.csv, see reference/SOURCES.md) pairs a name with each of its
nicknames. A forename belongs to the group of every name it is a nickname of, and to its own
group when it has nicknames itself: William -> {william}; Bill -> {william}; Will -> {wilbur,
wilfred, william, ...}. Two forenames are variants when their groups meet. Groups are not
merged transitively: Al is a nickname of both Albert and Alfred, which are not each other's.

For blocking, each name also gets one group, its `canonical` name: the largest of its groups
(the one with most names; ties by name), so Will, Bill and William all block with William,
while the comparison still sees every group. Chosen from the list alone, it is the same on any data.
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
        WITH member AS (SELECT lower(name1) AS name, lower(name1) AS grp FROM link_nickname_pairs
                        UNION SELECT lower(name2), lower(name1) FROM link_nickname_pairs),
        sized AS (SELECT name, grp, count(*) OVER (PARTITION BY grp) AS members FROM member),
        ranked AS (SELECT name, grp, row_number() OVER (PARTITION BY name ORDER BY members DESC, grp) AS rank
                   FROM sized)
        SELECT name, list_sort(list(grp)) AS groups, max(CASE WHEN rank = 1 THEN grp END) AS canonical
        FROM ranked GROUP BY name""")
    engine.unregister("link_nickname_pairs")
    return GROUPS_TABLE
