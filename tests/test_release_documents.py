"""Person id matching rounds and the clash message, the released linkage quality summary and
the release notes' person id section: real DuckDB, small inputs made here."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datafirst.engine import Engine
from datafirst.release import person_ids
from datafirst.release.documentation import _released_bands, quality_summaries, release_notes
from datafirst.release.products import install_keyed_hash
from datafirst.workspace import Workspace

THRESHOLDS = ("high", "medium", "low")
SALT = "a6d9b1265018df4fd9f66cd5fc60330140c83c3c534b8843a4140e6b2c36154c"


def _write_ids(engine: Engine, tmp_path: Path, clusters: dict[str, str], previous: dict[str, str]) -> tuple[Path, Path]:
    """`clusters`: record key -> cluster now; `previous`: record key -> previous person id
    (the same at every threshold). Returns the clusters and previous lookup parquet files."""
    keys = list(clusters)
    current = tmp_path / "clusters.parquet"
    pq.write_table(pa.table({"record_key": keys, **{f"person_id_{t}": [clusters[k] for k in keys]
                                                     for t in THRESHOLDS}}), current)
    old_keys = list(previous)
    hashes = [engine.scalar("SELECT keyed_hash(?)", [k]) for k in old_keys]
    lookup = tmp_path / "previous.parquet"
    pq.write_table(pa.table({"row_id_hash": hashes, **{f"person_id_{t}": [previous[k] for k in old_keys]
                                                        for t in THRESHOLDS}}), lookup)
    return current, lookup


def test_matching_rounds_run_until_no_pair_is_left(tmp_path):
    """A chain: cluster C_k shares w_k records with previous id O_k and w_k - 1 with O_{k-1}, w
    falling along the chain, so each round can continue only the next link. All 25 continue."""
    links = 25
    clusters, previous = {}, {}
    n, w = 0, 60
    for k in range(links):
        for share, cluster in ((w, f"C{k:02d}"), (w - 1, f"C{k + 1:02d}")):
            for _ in range(share):
                key = f"s|t|{n:06d}"
                n += 1
                clusters[key], previous[key] = cluster, f"O{k:02d}"
        w -= 2
    with Engine() as engine:
        install_keyed_hash(engine, SALT)
        current, lookup = _write_ids(engine, tmp_path, clusters, previous)
        summary = person_ids.assign(engine, current, lookup, "v0002", "series")
        ids = dict(engine.execute(f"SELECT DISTINCT record_key, person_id_medium FROM {person_ids.ASSIGNED}"))
    for t in THRESHOLDS:
        s = summary[t]
        assert s["previous_people"] == links and s["people"] == links + 1
        assert s["continued"] == links and s["previous_ids_retired"] == 0
        assert s["new_ids_after_merge_or_split"] == 1  # the chain's last cluster
    # Each cluster continues its own previous id, the one it shares most records with.
    first_key = {}
    for key in sorted(clusters):
        first_key.setdefault(clusters[key], key)
    for k in range(links):
        assert ids[first_key[f"C{k:02d}"]] == f"O{k:02d}"
    assert ids[first_key[f"C{links:02d}"]].startswith("P")


def test_an_id_clash_is_counted_once_and_the_message_says_what_works(tmp_path):
    """A previous id equal to the id a new cluster would be given in the same series: the
    clash is refused, counted once, and the message points to --new-series, not to releasing
    again (which draws the same ids)."""
    with Engine() as engine:
        install_keyed_hash(engine, SALT)
        new_id = {t: "P" + engine.scalar("SELECT keyed_hash(?)", [f"S|{t}|v0002|s|t|2"]) for t in THRESHOLDS}
        keys = ["s|t|1", "s|t|2"]
        current = tmp_path / "clusters.parquet"
        pq.write_table(pa.table({"record_key": keys, **{f"person_id_{t}": ["C1", "C2"] for t in THRESHOLDS}}), current)
        lookup = tmp_path / "previous.parquet"
        pq.write_table(pa.table({"row_id_hash": [engine.scalar("SELECT keyed_hash('s|t|1')")],
                                 **{f"person_id_{t}": [new_id[t]] for t in THRESHOLDS}}), lookup)
        messages = []
        for _ in range(2):
            with pytest.raises(person_ids.IdClash) as clash:
                person_ids.assign(engine, current, lookup, "v0002", "S")
            messages.append(str(clash.value))
        # A new series (what --new-series gives: nothing carried, another series) releases.
        summary = person_ids.assign(engine, current, None, "v0002", person_ids.new_series())
    assert messages[0] == messages[1]  # releasing again gives the same clash
    message = messages[0]
    assert message.startswith("1 new person id(s) at high ")
    assert "--new-series" in message and "release again to draw" not in message
    assert summary["high"]["people"] == 2


def _linkage_report(ws: Workspace) -> None:
    def row(group: str, true: int, pred: int, tp: int) -> dict:
        precision, recall = tp / pred, tp / true
        return {"threshold": "medium", "group": group, "true_pairs": true, "predicted_pairs": pred,
                "true_positives": tp, "precision": round(precision, 5), "recall": round(recall, 5),
                "f1": round(2 * precision * recall / (precision + recall), 5)}

    def share(group_by: str, group: str, records: int, linked: int) -> dict:
        return {"group_by": group_by, "group": group, "records": records, "linked": linked,
                "linked_share": round(linked / records, 4)}

    def rate(source: str, found_in: str, records: int, found: int) -> dict:
        return {"source": source, "found_in": found_in, "records": records, "found": found,
                "share": round(found / records, 4)}

    report = {
        "generated_at": "2025-06-30T00:00:00+00:00", "thresholds": {"high": 0.99, "medium": 0.95, "low": 0.8},
        "people": {"high": 500, "medium": 480, "low": 470},
        # 9 people in 3-5 and 1 in 6+: the total minus the other bands would give each back.
        "cluster_sizes": {"medium": {"1": 400, "2": 70, "3-5": 9, "6+": 1, "largest": 7}},
        "match_rates": [rate("a", "b", 98, 4),  # 0.0408 x 98 records: 4
                        rate("b", "a", 300, 150),
                        rate("c", "a", 100, 95),  # 5 not found
                        rate("d", "a", 4, 0)],  # a source of 4 records
        "linked_share_by_group": [share("sex", "F", 300, 120), share("sex", "M", 250, 100),
                                  share("sex", "unknown", 4, 1),  # dropped alone, the total would give it back
                                  share("age_band", "born 2000+", 50, 46),  # 4 not linked
                                  share("age_band", "born 1980-1999", 504, 200)],
        "borderline_sample": [{"left": {"forename": "x"}}],
        "accuracy": {
            "overall": [row("all", 250, 240, 235)],
            "ethnicity": [row("A", 200, 190, 188),  # 2 false positives: true positives and rates suppressed
                          row("B", 3, 3, 2),  # a group of 3 true pairs: left out
                          row("C", 40, 36, 7),  # 7 true positives: suppressed, with the rates that give it back
                          row("D", 100, 95, 80)],  # nothing small
        },
    }
    folder = ws.reports / "linkage_quality"
    folder.mkdir(parents=True)
    (folder / "latest.json").write_text(json.dumps(report), encoding="utf-8")
    dq = {"generated_at": "2025-06-30T00:00:00+00:00", "tables": [
        {"source": "a", "table": "t", "read": 103, "landed": 100, "quarantined": 3, "fields": [
            {"field": "name", "role": "full_name", "completeness": 0.99, "validity": 0.9495},  # 1 missing, 5 invalid
            {"field": "born", "role": "date_of_birth", "completeness": 0.5, "validity": 0.8}]},  # 50 and 10
        {"source": "b", "table": "t", "read": 150, "landed": 100, "quarantined": 50, "fields": []}]}
    (ws.reports / "data_quality").mkdir(parents=True)
    (ws.reports / "data_quality" / "latest.json").write_text(json.dumps(dq), encoding="utf-8")


def test_released_quality_summaries_suppress_small_counts_and_what_gives_them_back(tmp_path):
    ws = Workspace(tmp_path)
    _linkage_report(ws)
    summaries = quality_summaries(ws, 10)
    lq = summaries["linkage_quality.json"]
    assert "borderline_sample" not in lq
    counts = ("true_pairs", "predicted_pairs", "true_positives")
    rows = [r for group_rows in lq["accuracy"].values() for r in group_rows]
    for r in rows:
        for c in counts:
            assert r[c] in ("<10", None) or isinstance(r[c], int) and (r[c] == 0 or r[c] >= 10), (r, c)
    assert {r["group"] for r in lq["accuracy"]["ethnicity"]} == {"A", "C", "D"}
    by_group = {r["group"]: r for r in lq["accuracy"]["ethnicity"]}
    c = by_group["C"]
    assert c["true_positives"] == "<10" and c["true_pairs"] == 40 and c["predicted_pairs"] == 36
    assert c["precision"] is None and c["recall"] is None and c["f1"] is None
    a = by_group["A"]  # predicted - true positives = 2: true positives and the rates would give it back
    assert a["true_positives"] is None and a["precision"] is None and a["recall"] is None and a["f1"] is None
    d = by_group["D"]
    assert d["true_positives"] == 80 and d["precision"] == round(80 / 95, 5)
    assert lq["accuracy"]["overall"][0]["true_pairs"] == 250
    # Cluster size bands: the small ones merged, none hidden, the people still their sum.
    assert lq["cluster_sizes"]["medium"] == {"1": 400, "2": 70, "3+": 10}
    assert sum(lq["cluster_sizes"]["medium"].values()) == lq["people"]["medium"]
    # A share whose count or complement is small is suppressed; the count itself is not released.
    assert [(m["source"], m["share"]) for m in lq["match_rates"]] == [("a", None), ("b", 0.5), ("c", None), ("d", None)]
    assert [m["records"] for m in lq["match_rates"]] == [98, 300, 100, "<10"]
    assert all("found" not in m for m in lq["match_rates"])
    groups = {(g["group_by"], g["group"]): g for g in lq["linked_share_by_group"]}
    assert set(groups) == {("sex", "F"), ("sex", "other: unknown, M"), ("age_band", "born 1980-1999"),
                           ("age_band", "born 2000+")}
    assert groups[("sex", "other: unknown, M")]["records"] == 254
    assert groups[("sex", "other: unknown, M")]["linked_share"] == round(101 / 254, 4)
    assert groups[("age_band", "born 2000+")]["linked_share"] is None
    assert all("linked" not in g for g in lq["linked_share_by_group"])
    # One band of 1 past an empty one: merged on until it is not small.
    assert _released_bands({"1": 300, "2": 120, "3-5": 198, "6-10": 116, "11-20": 0, "21+": 1}, 10) == {
        "1": 300, "2": 120, "3-5": 198, "6+": 117}
    # Rows read = landed + quarantined: suppressed with the quarantined count.
    tables = summaries["data_quality.json"]["tables"]
    assert [(f["completeness"], f["validity"]) for f in tables[0]["fields"]] == [(None, None), (0.5, 0.8)]
    assert [(t["rows_read"], t["rows_landed"], t["rows_quarantined"]) for t in tables] == [
        (None, 100, "<10"), (150, 100, 50)]
    # No count below the threshold anywhere in the released files.
    text = json.dumps(summaries)
    for small in ("3", "2", "7", "4", "1", "5", "9"):
        assert f": {small}," not in text and f": {small}}}" not in text


def _previous_release(root: Path, key_check: str) -> Path:
    previous = root / "v0001"
    previous.mkdir(parents=True)
    (previous / "dictionary.json").write_text(json.dumps({"tables": []}), encoding="utf-8")
    (previous / "manifest.json").write_text(json.dumps({"version": "v0001", "key_check": key_check,
                                                        "id_series": "abc"}), encoding="utf-8")
    return previous


def _notes(previous: Path, key_check: str, carried_from: str | None) -> str:
    summary = {"people": 10, "previous_people": 0, "continued": 0, "new_people": 10,
               "new_ids_after_merge_or_split": 0, "merges": 0, "previous_ids_split": 0, "previous_ids_retired": 0,
               "previous_ids_removed": 0, "previous_ids_kept_share": None}
    meta = {"created_at": "2025-06-30T00:00:00+00:00", "model": "model.json",
            "thresholds": {"high": 0.99, "medium": 0.95, "low": 0.8}, "key_check": key_check,
            "person_ids": {"carried_from": carried_from, "thresholds": {t: summary for t in THRESHOLDS}}}
    return release_notes("v0002", {"tables": []}, previous, meta)


def test_release_notes_say_why_no_person_id_carried_over(tmp_path):
    same = _notes(_previous_release(tmp_path / "same", "k1"), "k1", None)
    assert "no id carries over from v0001" in same
    assert "hashing key changed" not in same and "--new-series" in same and "hashing key is the same" in same
    changed = _notes(_previous_release(tmp_path / "changed", "k1"), "k2", None)
    assert "no id carries over from v0001 (the hashing key changed" in changed
    carried = _notes(_previous_release(tmp_path / "carried", "k1"), "k1", "v0001")
    assert "no id carries over" not in carried and "| medium | 10 |" in carried
