"""What a release's data dictionary says each column means, and where it falls short.

Every released column's meaning is written in its contract (`description`) or in the product
that derives it (release/products.py); none is generated. Where a contract gives none, the
dictionary says so (`meaning_missing`, naming the key to write); a column empty in every row
carries why (`empty_because`), or a flagged fallback (`empty_unexplained`). The check here
counts what a researcher would find wanting: template meanings (a meaning that only restates
the column's name, or says it is "as recorded by" a source), missing ones, and empty columns
left unexplained.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# What a release says of a column that is empty in every row when nothing explains why.
NO_VALUE_DELIVERED = "no value was delivered in this release"
TEMPLATE_PHRASE = "as recorded by"


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower().replace("_", " ")).split())


def is_template(name: str, description: str) -> bool:
    """A meaning made from the column's name rather than written: "<column> as recorded by
    <source>", or the name restated (underscores as spaces, case and punctuation aside; a hashed
    id's name also without its `_hash`)."""
    if TEMPLATE_PHRASE in description.lower():
        return True
    said = _words(description)
    return bool(said) and said in {_words(name), _words(name.removesuffix("_hash"))}


def fully_empty(missing: int, rows: int) -> bool:
    """A column with no value in any row of a table that has rows."""
    return rows > 0 and missing == rows


@dataclass
class MeaningCheck:
    columns: int = 0
    template: list[str] = field(default_factory=list)  # table.column
    missing: list[str] = field(default_factory=list)
    empty_unexplained: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"template meanings: {len(self.template)} of {self.columns} columns"
                + (f" ({', '.join(self.template)})" if self.template else ""),
                f"columns without a meaning: {len(self.missing)}" + (f" ({', '.join(self.missing)})" if self.missing
                                                                      else ""),
                f"empty columns unexplained: {len(self.empty_unexplained)}"
                + (f" ({', '.join(self.empty_unexplained)})" if self.empty_unexplained else "")]


def check_dictionary(d: dict) -> MeaningCheck:
    """`d`: a release's dictionary.json."""
    out = MeaningCheck()
    for t in d["tables"]:
        for c in t["columns"]:
            out.columns += 1
            name = f"{t['name']}.{c['name']}"
            if is_template(c["name"], c.get("description", "")):
                out.template.append(name)
            if c.get("meaning_missing") or not c.get("description"):
                out.missing.append(name)
            if "empty_unexplained" in c:
                out.empty_unexplained.append(name)
    return out


def check_release(release: Path) -> MeaningCheck:
    return check_dictionary(json.loads((Path(release) / "dictionary.json").read_text(encoding="utf-8")))


def meaning_notes(d: dict) -> list[str]:
    """The release notes' section: the columns without a meaning (and the contract key to write)
    and the columns empty in every row (with why, or the key to write the reason)."""
    missing = [(t["name"], c["name"], c["meaning_missing"]) for t in d["tables"] for c in t["columns"]
               if c.get("meaning_missing")]
    empty = [(t["name"], c["name"], c.get("empty_because", NO_VALUE_DELIVERED), c.get("empty_unexplained"))
             for t in d["tables"] for c in t["columns"] if t["rows"] and c["distinct_values"] == 0]
    out = ["## Column meanings", "",
           ("Every column's meaning comes from its contract (`description`) or from the product that derives it; "
            "none is generated."), ""]
    out += ["Columns without a meaning:", "", *(f"- `{t}.{c}`: {why}" for t, c, why in missing), ""] if missing \
        else ["Columns without a meaning: none.", ""]
    out += ["Columns empty in every row:", "",
            *(f"- `{t}.{c}`: {why}" + (f" (unexplained: {hint})" if hint else "") for t, c, why, hint in empty), ""] \
        if empty else ["Columns empty in every row: none.", ""]
    return out
