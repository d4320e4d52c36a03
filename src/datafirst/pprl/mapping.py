"""Map the linker's table of tokens back to a party's own records (`datafirst pprl-map`).

Run by a data holder, with the shared secret: each of its records' tokens is recomputed (the
keyed hash encode.py wrote) and joined to the link table, giving record key, source and the
person ids at the three thresholds. The partner's content can then be joined to a release under
the person id (docs/pprl.md).
"""

from __future__ import annotations

from pathlib import Path

from ..engine import Engine, sql_string
from .encode import SECRET_VARIABLE, EncodeError, record_token_sql


def map_links(engine: Engine, secret: str, inputs: list[Path], links: Path, party: str, out: Path,
              sources: list[str] | None = None) -> dict:
    """Write `out`: the party's records with their person ids from `links`; returns counts."""
    paths = "[" + ", ".join(sql_string(p) for p in inputs) + "]"
    link_table = f"read_parquet({sql_string(links)})"
    parties = {r[0] for r in engine.execute(f"SELECT DISTINCT party FROM {link_table}")}
    if party not in parties:
        raise EncodeError(f"{links}: holds no records of party {party!r} (it holds {', '.join(sorted(parties))}); "
                          "give the party name used with `datafirst encode`")
    where = ("WHERE source IN (" + ", ".join(sql_string(s) for s in sources) + ")") if sources else ""
    engine.execute(f"SET VARIABLE {SECRET_VARIABLE} = ?", [secret])
    try:
        engine.execute(f"""CREATE OR REPLACE TEMP TABLE pprl_mine AS
            SELECT record_key, source, {record_token_sql(party, 'record_key')} AS token
            FROM read_parquet({paths}, union_by_name = true) {where}""")
    finally:
        engine.execute(f"RESET VARIABLE {SECRET_VARIABLE}")
    engine.execute(f"""CREATE OR REPLACE TEMP TABLE pprl_mapped AS
        SELECT m.record_key, m.source, l.person_id_high, l.person_id_medium, l.person_id_low
        FROM pprl_mine m JOIN {link_table} l ON l.party = {sql_string(party)} AND l.token = m.token""")
    found = int(engine.scalar("SELECT count(*) FROM pprl_mapped"))
    expected = int(engine.scalar(f"SELECT count(*) FROM {link_table} WHERE party = {sql_string(party)}"))
    engine.execute("DROP TABLE pprl_mine")
    if found < expected:
        engine.execute("DROP TABLE pprl_mapped")
        raise EncodeError(f"only {found:,} of the link table's {expected:,} tokens of party {party!r} match these "
                          "records: map with the identifiers, sources and secret the party encoded with")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = engine.to_parquet("SELECT * FROM pprl_mapped ORDER BY record_key", out)
    engine.execute("DROP TABLE pprl_mapped")
    return {"records": written, "party": party}
