"""Render the world's true events as each source system's raw extract, with its errors.

Every source has its own native shape: file format, delimiter, encoding, date format,
column names, how names are held and which ids it issues. Recording errors are applied
per record (corrupt.py); whole-row defects (duplicates, malformed rows) are planted here
because they live in the bytes of a file, not in a value.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field

import numpy as np

from .corrupt import Corrupter, Identity, snapshot
from .error_model import ErrorModel, SourceErrorRates
from .events import Frame
from .population import People, scramble_ids
from .reference import Reference

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
ETHNICITY_TEXT = {
    "W1": "White: English, Welsh, Scottish, Northern Irish or British", "W2": "White: Irish",
    "W3": "White: Gypsy or Irish Traveller", "W4": "White: Roma", "W9": "White: Any other White background",
    "M1": "Mixed: White and Black Caribbean", "M2": "Mixed: White and Black African", "M3": "Mixed: White and Asian",
    "M9": "Mixed: Any other Mixed background", "A1": "Asian or Asian British: Indian", "A2": "Asian or Asian British: Pakistani",
    "A3": "Asian or Asian British: Bangladeshi", "A4": "Asian or Asian British: Chinese", "A9": "Asian or Asian British: Any other Asian background",
    "B1": "Black or Black British: Caribbean", "B2": "Black or Black British: African", "B9": "Black or Black British: Any other Black background",
    "O1": "Other ethnic group: Arab", "O9": "Other ethnic group: Any other ethnic group",
}


@dataclass(frozen=True)
class ExtractFile:
    """One raw extract file as its source system writes it."""

    source: str
    table: str
    path: str  # relative to the world's extracts folder
    columns: tuple[str, ...]  # empty for JSON lines
    delimiter: str = ","
    encoding: str = "utf-8"
    bom: bool = False
    record_id: str = ""  # the native id column of person-bearing tables ('' for others)
    error_profile: str = ""  # the error model entry for this table, if not the source's own

    @property
    def errors_from(self) -> str:
        return self.error_profile or self.source

    @property
    def is_jsonl(self) -> bool:
        return self.path.endswith(".jsonl")


EXTRACTS: tuple[ExtractFile, ...] = (
    ExtractFile("magistrates", "defendants", "magistrates/defendants.csv", (
        "case_id", "defendant_id", "court_code", "first_hearing_date", "forename_1", "forename_2", "forename_3",
        "surname", "date_of_birth", "sex", "self_defined_ethnicity", "address_line_1", "town", "postcode", "pnc_id",
        "outcome", "sentence_type", "sentence_date", "sent_to_crown_court"), record_id="defendant_id"),
    ExtractFile("magistrates", "offences", "magistrates/offences.csv", (
        "case_id", "defendant_id", "offence_seq", "offence_code", "offence_title", "offence_date", "plea", "verdict")),
    ExtractFile("crown", "defendants", "crown/defendants.psv", (
        "case_number", "court_centre", "receipt_date", "defendant_name", "date_of_birth", "gender", "pnc_number",
        "postcode", "magistrates_case_ref", "main_offence_code", "outcome", "disposal", "sentence_date",
        "custodial_months"), delimiter="|", record_id="case_number"),
    ExtractFile("prison", "bookings", "prison/bookings.csv", (
        "booking_id", "prisoner_number", "last_name", "first_name", "middle_names", "birth_date", "gender",
        "ethnicity_code", "pnc_number", "cro_number", "establishment_code", "reception_date", "release_date",
        "sentence_length_days", "home_postcode"), delimiter=";", encoding="cp1252", record_id="booking_id"),
    ExtractFile("prison", "aliases", "prison/aliases.csv", (
        "alias_id", "prisoner_number", "alias_last_name", "alias_first_name", "alias_birth_date"),
        delimiter=";", encoding="cp1252", record_id="alias_id", error_profile="prison_aliases"),
    ExtractFile("probation", "events", "probation/events.jsonl", (), record_id="crn"),
    ExtractFile("family", "cases", "family/cases.tsv", (
        "case_number", "court", "issue_date", "law_type", "order_type", "applicant_authority"), delimiter="\t"),
    ExtractFile("family", "parties", "family/parties.tsv", (
        "party_id", "case_number", "party_role", "forenames", "surname", "date_of_birth", "gender", "postcode"),
        delimiter="\t", record_id="party_id"),
    ExtractFile("civil", "claims", "civil/claims.csv", (
        "claim_number", "issue_date", "claim_type", "claimant_name", "arrears_amount", "outcome"), bom=True),
    ExtractFile("civil", "parties", "civil/parties.csv", (
        "party_id", "claim_number", "party_name", "address_line_1", "address_line_2", "postcode"),
        bom=True, record_id="party_id"),
)
EXTRACT_BY_KEY = {(e.source, e.table): e for e in EXTRACTS}

# Id spaces: each native id is a scrambled counter in a space of a*b values.
ID_SPACES = {
    "mags_case": (10**5, 10**5), "mags_defendant": (10**5, 10**5), "crown_case": (10**3, 10**4),
    "booking": (10**4, 10**5), "prisoner_number": (26 * 10_000, 26 * 26), "alias": (10**4, 10**5),
    "crn": (26 * 10**3, 10**3), "family_case": (10**3, 10**4), "family_party": (10**4, 10**5),
    "civil_claim": (10**4, 10**4), "civil_party": (10**4, 10**5),
}
LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), dtype=object)


@dataclass
class IdIssuer:
    """Hands out native ids that are unique across the whole world (chunks run in order)."""

    seed: int
    issued: dict[str, int] = field(default_factory=dict)

    def take(self, kind: str, n: int) -> np.ndarray:
        start = self.issued.get(kind, 0)
        shape = ID_SPACES[kind]
        if start + n > shape[0] * shape[1]:
            raise ValueError(f"the world is too large for the {kind} id space ({shape[0] * shape[1]:,} ids)")
        self.issued[kind] = start + n
        return scramble_ids(np.arange(start, start + n), shape, self.seed * 31 + sorted(ID_SPACES).index(kind))


def ymd(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    objs = dates.astype("datetime64[D]").astype(object)
    return (np.array([d.year if d else 0 for d in objs], dtype=np.int64),
            np.array([d.month if d else 0 for d in objs], dtype=np.int64),
            np.array([d.day if d else 0 for d in objs], dtype=np.int64))


def fmt_dates(y: np.ndarray, m: np.ndarray, d: np.ndarray, style: str) -> np.ndarray:
    rows = zip(y.tolist(), m.tolist(), d.tolist())
    if style == "dmy":
        out = [f"{dd:02d}/{mm:02d}/{yy:04d}" if yy else "" for yy, mm, dd in rows]
    elif style == "iso":
        out = [f"{yy:04d}-{mm:02d}-{dd:02d}" if yy else "" for yy, mm, dd in rows]
    elif style == "oracle":
        out = [f"{dd:02d}-{MONTHS[mm - 1] if 1 <= mm <= 12 else mm}-{yy:04d}" if yy else "" for yy, mm, dd in rows]
    elif style == "dmy_short":
        out = [f"{dd}/{mm}/{yy:04d}" if yy else "" for yy, mm, dd in rows]
    elif style == "compact":
        out = [f"{yy:04d}{mm:02d}{dd:02d}" if yy else "" for yy, mm, dd in rows]
    else:
        raise ValueError(style)
    return np.array(out, dtype=object)


def fmt_event_dates(dates: np.ndarray, style: str, present: np.ndarray | None = None) -> np.ndarray:
    y, m, d = ymd(dates)
    if present is not None:
        y = np.where(present, y, 0)
    return fmt_dates(y, m, d, style)


def _fold_for_cp1252(text: str) -> str:
    """What a legacy Windows-1252 system keeps of a name: letters it cannot hold lose
    their accents (Ł becomes L), the rest stays."""
    out = []
    for ch in text:
        if "\udc80" <= ch <= "\udcff":  # a planted raw byte (surrogateescape): kept as it is
            out.append(ch)
            continue
        try:
            ch.encode("cp1252")
            out.append(ch)
        except UnicodeEncodeError:
            base = unicodedata.normalize("NFKD", ch)[0]
            out.append({"Ł": "L", "ł": "l", "Ø": "O", "ø": "o", "Đ": "D", "đ": "d"}.get(ch, base if base.isascii() else "?"))
    return "".join(out)


@dataclass
class Rendered:
    """One extract file's share of a chunk: its lines and, for person-bearing tables, truth."""

    lines: list[bytes]
    truth: dict[str, list] | None = None


def _quote(v: str, delim: str) -> str:
    if delim in v or '"' in v:
        return '"' + v.replace('"', '""') + '"'
    return v


def _plant_defects(rng: np.random.Generator, rates: SourceErrorRates, n: int, jsonl: bool) -> np.ndarray:
    """One whole-row defect kind (or '') per record, drawn from the declared rates."""
    defect = np.full(n, "", dtype=object)
    for kind, rate in rates.kinds("rows"):
        if (kind == "invalid_json") != jsonl and kind not in ("duplicate_row", "impossible_date", "broken_bytes"):
            continue
        pick = (defect == "") & (rng.random(n) < rate)
        defect[pick] = kind
    return defect


IMPOSSIBLE = {"dmy": "31/02/{y}", "iso": "{y}-02-30", "oracle": "31-FEB-{y}", "dmy_short": "30/2/{y}",
              "compact": "{y}1345"}


def encode_table(spec: ExtractFile, rows: dict[str, np.ndarray], defect: np.ndarray, date_col: str | None, date_style: str,
                 name_col: str, rng: np.random.Generator) -> tuple[list[bytes], np.ndarray]:
    """Encode delimited rows, planting row defects. Returns lines and, per record, its
    1-based line offset within these lines (the first copy for duplicated rows)."""
    n = len(defect)
    enc = "cp1252" if spec.encoding == "cp1252" else "utf-8"
    if n == 0:
        return [], np.empty(0, dtype=np.int64)
    idx = np.flatnonzero(defect == "impossible_date")
    if len(idx) and date_col is None:
        raise ValueError(f"{spec.source}/{spec.table} has no date column for an impossible date; set its "
                         "impossible_date rate to 0 in the error model")
    if len(idx):
        years = rng.integers(1960, 2005, len(idx))
        rows[date_col][idx] = [IMPOSSIBLE[date_style].format(y=y) for y in years.tolist()]
    idx = np.flatnonzero(defect == "broken_bytes")
    if len(idx):
        # A lone byte that is not valid in the file's encoding inside a name: the classic mangled
        # export (0xE9 alone is not UTF-8; 0x81 is undefined in Windows-1252).
        bad = "\udc81" if enc == "cp1252" else "\udce9"
        rows[name_col][idx] = [v[: len(v) // 2] + bad + v[len(v) // 2:] for v in rows[name_col][idx]]
    delim = spec.delimiter
    # Wrong column counts, the two ways they happen: a value typed with an unquoted delimiter
    # in it (one field too many), or a row cut short (one field too few).
    wrong = np.flatnonzero(defect == "wrong_column_count")
    split_mark = "\x00split\x00"
    split_rows, short_rows = wrong[0::2], wrong[1::2]
    rows[name_col][split_rows] = [f"{v[: len(v) // 2]}{split_mark}{v[len(v) // 2:]}" for v in rows[name_col][split_rows]]
    cols = [rows[c] for c in spec.columns]
    texts = [delim.join(_quote(v, delim) for v in vals) for vals in zip(*cols)]
    for i in split_rows.tolist():
        texts[i] = texts[i].replace(split_mark, delim)
    for i in short_rows.tolist():
        texts[i] = texts[i].rsplit(delim, 1)[0]
    if enc == "cp1252":
        lines = [_fold_for_cp1252(t).encode("cp1252", "surrogateescape") + b"\r\n" for t in texts]
    else:
        lines = [t.encode("utf-8", "surrogateescape") + b"\n" for t in texts]
    return _with_duplicates(lines, defect)


def _with_duplicates(lines: list[bytes], defect: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """An exact duplicate row is the original's bytes again, on the next line (the copy
    is the one a loader should set aside)."""
    out: list[bytes] = []
    offsets = np.empty(len(lines), dtype=np.int64)
    for i, line in enumerate(lines):
        out.append(line)
        offsets[i] = len(out)
        if defect[i] == "duplicate_row":
            out.append(line)
    return out, offsets


class SourceRenderer:
    """Renders one chunk of the world into every source's extract lines and truth rows."""

    def __init__(self, rng: np.random.Generator, ref: Reference, model: ErrorModel, ids: IdIssuer):
        self.rng, self.ref, self.model, self.ids = rng, ref, model, ids
        self.offence_codes = np.array([o["code"] for o in ref.offences], dtype=object)
        self.offence_titles = np.array([o["description"] for o in ref.offences], dtype=object)

    def identities(self, source: str, people: People, person: np.ndarray, when: np.ndarray) -> Identity:
        ident = snapshot(people, person, when)
        Corrupter(self.rng, self.ref, self.model.for_source(source)).apply(ident, people, person, when)
        return ident

    def _truth(self, spec: ExtractFile, people: People, person: np.ndarray, record_ids: np.ndarray,
               offsets: np.ndarray, defect: np.ndarray, ident: Identity | None) -> dict[str, list]:
        n = len(person)
        errors = ident.error_strings() if ident is not None else np.full(n, "", dtype=object)
        # The second copy of a duplicated row is its own record in the file.
        dup = np.flatnonzero(defect == "duplicate_row")
        return {
            "source": [spec.source] * (n + len(dup)),
            "table": [spec.table] * (n + len(dup)),
            "record_id": record_ids.tolist() + record_ids[dup].tolist(),
            "row_offset": offsets.tolist() + (offsets[dup] + 1).tolist(),
            "person_id": people.person_id[person].tolist() + people.person_id[person[dup]].tolist(),
            "defect": [d if d != "duplicate_row" else "" for d in defect.tolist()] + ["duplicate_row"] * len(dup),
            "errors": errors.tolist() + errors[dup].tolist(),
        }

    # --- criminal courts -----------------------------------------------------------------
    def magistrates(self, people: People, crim: dict[str, Frame]) -> tuple[dict[str, Rendered], np.ndarray]:
        cases, offences = crim["cases"], crim["offences"]
        person, when = cases["person"], cases["date"]
        n = len(person)
        ident = self.identities("magistrates", people, person, when)
        case_ids = np.array([f"MC{v:010d}" for v in self.ids.take("mags_case", n).tolist()], dtype=object)
        def_ids = np.array([f"D{v:010d}" for v in self.ids.take("mags_defendant", n).tolist()], dtype=object)
        fore = ident.forename
        mids = [m.split(" ") if m else [] for m in ident.middle_names]
        upper = self.rng.random(n) < 0.12  # some courts type surnames in capitals
        ethnic = np.where(self.rng.random(n) < 0.45, people.ethnicity[person], "")
        rows = {
            "case_id": case_ids, "defendant_id": def_ids, "court_code": cases["court"],
            "first_hearing_date": fmt_event_dates(when, "dmy"),
            "forename_1": fore, "forename_2": np.array([m[0] if m else "" for m in mids], dtype=object),
            "forename_3": np.array([" ".join(m[1:]) for m in mids], dtype=object),
            "surname": np.where(upper, np.char.upper(ident.surname.astype(str)).astype(object), ident.surname),
            "date_of_birth": fmt_dates(ident.dob_y, ident.dob_m, ident.dob_d, "dmy"),
            "sex": ident.sex, "self_defined_ethnicity": ethnic.astype(object),
            "address_line_1": ident.address_line, "town": np.where(ident.postcode == "", "", ident.town).astype(object),
            "postcode": ident.postcode, "pnc_id": ident.pnc, "outcome": cases["outcome"],
            "sentence_type": cases["sentence"],
            "sentence_date": fmt_event_dates(cases["sentence_date"], "dmy", cases["sentence"] != ""),
            "sent_to_crown_court": np.where(cases["sent_to_crown"], "Y", "N").astype(object),
        }
        spec = EXTRACT_BY_KEY[("magistrates", "defendants")]
        defect = _plant_defects(self.rng, self.model.for_source("magistrates"), n, jsonl=False)
        lines, offsets = encode_table(spec, rows, defect, "date_of_birth", "dmy", "surname", self.rng)
        out = {"magistrates/defendants": Rendered(lines, self._truth(spec, people, person, def_ids, offsets, defect, ident))}

        oc = offences["case"]
        orows = {
            "case_id": case_ids[oc], "defendant_id": def_ids[oc], "offence_seq": offences["seq"].astype(str).astype(object),
            "offence_code": self.offence_codes[offences["offence"]], "offence_title": self.offence_titles[offences["offence"]],
            "offence_date": fmt_event_dates(offences["offence_date"], "dmy"), "plea": offences["plea"],
            "verdict": np.where(cases["outcome"][oc] == "sent_to_crown", "", offences["verdict"]).astype(object),
        }
        ospec = EXTRACT_BY_KEY[("magistrates", "offences")]
        olines, _ = encode_table(ospec, orows, np.full(len(oc), "", dtype=object), "offence_date", "dmy", "offence_title", self.rng)
        out["magistrates/offences"] = Rendered(olines)
        return out, case_ids

    def crown(self, people: People, crown: Frame, mags_case_ids: np.ndarray) -> tuple[Rendered, np.ndarray]:
        person, when = crown["person"], crown["date"]
        n = len(person)
        ident = self.identities("crown", people, person, when)
        years = ymd(when)[0]
        case_no = np.array([f"T{y}{v:07d}" for y, v in zip(years.tolist(), self.ids.take("crown_case", n).tolist())], dtype=object)
        forenames = np.array([f"{f} {m}".strip() for f, m in zip(ident.forename, ident.middle_names)], dtype=object)
        name = np.array([f"{s.upper()}, {f}" if f else s.upper() for s, f in zip(ident.surname, forenames)], dtype=object)
        gender = np.array([{"M": "Male", "F": "Female"}.get(s, "Not known") if s or self.rng.random() < 0.5 else ""
                           for s in ident.sex], dtype=object)
        has_ref = self.rng.random(n) < 0.6
        months = np.where(crown["custody_days"] > 0, np.maximum(1, crown["custody_days"] // 30), 0)
        rows = {
            "case_number": case_no, "court_centre": crown["court"], "receipt_date": fmt_event_dates(when, "iso"),
            "defendant_name": name, "date_of_birth": fmt_dates(ident.dob_y, ident.dob_m, ident.dob_d, "iso"),
            "gender": gender, "pnc_number": ident.pnc, "postcode": ident.postcode,
            "magistrates_case_ref": np.where(has_ref, mags_case_ids[crown["mags_case"]], "").astype(object),
            "main_offence_code": self.offence_codes[crown["main_offence"]], "outcome": crown["outcome"],
            "disposal": crown["sentence"],
            "sentence_date": fmt_event_dates(crown["sentence_date"], "iso", crown["sentence"] != ""),
            "custodial_months": np.array([str(m) if m else "" for m in months.tolist()], dtype=object),
        }
        spec = EXTRACT_BY_KEY[("crown", "defendants")]
        defect = _plant_defects(self.rng, self.model.for_source("crown"), n, jsonl=False)
        lines, offsets = encode_table(spec, rows, defect, "date_of_birth", "iso", "defendant_name", self.rng)
        return Rendered(lines, self._truth(spec, people, person, case_no, offsets, defect, ident)), case_no

    # --- prison ------------------------------------------------------------------------------
    def prison(self, people: People, custody: Frame) -> dict[str, Rendered]:
        person, when = custody["person"], custody["date"]
        n = len(person)
        ident = self.identities("prison", people, person, when)
        booking = np.array([str(100_000_000 + v % 900_000_000) for v in self.ids.take("booking", n).tolist()], dtype=object)
        new = custody["new_number"]
        numbers = self.ids.take("prisoner_number", int(new.sum()))
        noms = np.array([self._noms(v) for v in numbers.tolist()], dtype=object)
        number_index = np.cumsum(new) - 1  # journeys reuse the last number issued to the person
        prisoner_number = noms[number_index] if n else np.empty(0, dtype=object)
        ethnic = np.where(self.rng.random(n) < 0.93, people.ethnicity[person], "").astype(object)
        rows = {
            "booking_id": booking, "prisoner_number": prisoner_number,
            "last_name": np.array([s.upper() for s in ident.surname], dtype=object),
            "first_name": np.array([s.upper() for s in ident.forename], dtype=object),
            "middle_names": np.array([s.upper() for s in ident.middle_names], dtype=object),
            "birth_date": fmt_dates(ident.dob_y, ident.dob_m, ident.dob_d, "oracle"), "gender": ident.sex,
            "ethnicity_code": ethnic, "pnc_number": ident.pnc, "cro_number": ident.cro,
            "establishment_code": custody["establishment"], "reception_date": fmt_event_dates(when, "oracle"),
            "release_date": fmt_event_dates(custody["release"], "oracle", custody["released"]),
            "sentence_length_days": custody["sentence_days"].astype(str).astype(object),
            "home_postcode": ident.postcode,
        }
        spec = EXTRACT_BY_KEY[("prison", "bookings")]
        defect = _plant_defects(self.rng, self.model.for_source("prison"), n, jsonl=False)
        lines, offsets = encode_table(spec, rows, defect, "birth_date", "oracle", "last_name", self.rng)
        out = {"prison/bookings": Rendered(lines, self._truth(spec, people, person, booking, offsets, defect, ident))}

        # Aliases: one row per prisoner number for people known to use another identity.
        first_use = np.ones(n, dtype=bool)
        first_use[1:] = prisoner_number[1:] != prisoner_number[:-1]
        sel = np.flatnonzero(first_use & (people.alias_forename[person] != ""))
        a_person = person[sel]
        a_when = when[sel]
        # The error profile of this table declares `name: alias` at 1.0: every row is an alias
        # identity, and the truth's error log says so.
        a_ident = snapshot(people, a_person, a_when)
        aspec = EXTRACT_BY_KEY[("prison", "aliases")]
        Corrupter(self.rng, self.ref, self.model.for_source(aspec.errors_from)).apply(a_ident, people, a_person, a_when)
        alias_ids = np.array([f"AL{v:09d}" for v in self.ids.take("alias", len(sel)).tolist()], dtype=object)
        arows = {
            "alias_id": alias_ids, "prisoner_number": prisoner_number[sel],
            "alias_last_name": np.array([s.upper() for s in a_ident.surname], dtype=object),
            "alias_first_name": np.array([s.upper() for s in a_ident.forename], dtype=object),
            "alias_birth_date": fmt_dates(a_ident.dob_y, a_ident.dob_m, a_ident.dob_d, "oracle"),
        }
        adefect = np.full(len(sel), "", dtype=object)
        alines, aoff = encode_table(aspec, arows, adefect, "alias_birth_date", "oracle", "alias_last_name", self.rng)
        out["prison/aliases"] = Rendered(alines, self._truth(aspec, people, a_person, alias_ids, aoff, adefect, a_ident))
        return out

    @staticmethod
    def _noms(v: int) -> str:
        """NOMS-style prisoner number: letter, four digits, two letters (e.g. A1234BC)."""
        a, rest = divmod(v, 10_000 * 26 * 26)
        digits, rest = divmod(rest, 26 * 26)
        b, c = divmod(rest, 26)
        return f"{LETTERS[a]}{digits:04d}{LETTERS[b]}{LETTERS[c]}"

    # --- probation (JSON lines, nested) ------------------------------------------------------
    def probation(self, people: People, probation: Frame, requirements: Frame) -> Rendered:
        person, when = probation["person"], probation["date"]
        n = len(person)
        ident = self.identities("probation", people, person, when)
        crn = np.array([self._crn(v) for v in self.ids.take("crn", n).tolist()], dtype=object)
        dob = fmt_dates(ident.dob_y, ident.dob_m, ident.dob_d, "iso")
        event_date = fmt_event_dates(when, "iso")
        req_start = fmt_event_dates(requirements["start"], "iso")
        by_event: list[list[dict]] = [[] for _ in range(n)]
        for e, t, s, a, u in zip(requirements["event"].tolist(), requirements["type"].tolist(), req_start.tolist(),
                                 requirements["amount"].tolist(), requirements["unit"].tolist()):
            by_event[e].append({"type": t, "startDate": s, "amount": a, "unit": u})
        defect = _plant_defects(self.rng, self.model.for_source("probation"), n, jsonl=True)
        eth = people.ethnicity[person]
        texts = []
        for i in range(n):
            name = {"forename": ident.forename[i] or None,
                    "middleNames": ident.middle_names[i].split(" ") if ident.middle_names[i] else [],
                    "surname": ident.surname[i] or None}
            birth = dob[i] or None
            if defect[i] == "impossible_date":
                birth = f"{1960 + i % 40}-02-30"
            elif defect[i] == "broken_bytes" and name["surname"]:
                name["surname"] = name["surname"] + "\udce9"
            record = {
                "crn": crn[i],
                "offender": {
                    "name": name, "dateOfBirth": birth,
                    "gender": {"M": "Male", "F": "Female"}.get(ident.sex[i]),
                    "ethnicity": ETHNICITY_TEXT.get(eth[i]) if i % 9 else None,
                    "identifiers": {"pnc": ident.pnc[i] or None, "cro": ident.cro[i] or None},
                    "address": ({"line1": ident.address_line[i] or None, "town": ident.town[i], "postcode": ident.postcode[i]}
                                if ident.postcode[i] else None),
                },
                "event": {"sentenceDate": event_date[i], "sentenceType": probation["sentence"][i],
                          "lengthMonths": int(probation["length_months"][i])},
                "requirements": by_event[i],
            }
            text = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
            if defect[i] == "invalid_json":
                text = text[: len(text) // 2]  # a record cut off mid-write
            texts.append(text)
        lines = [t.encode("utf-8", "surrogateescape") + b"\n" for t in texts]
        lines, offsets = _with_duplicates(lines, defect)
        spec = EXTRACT_BY_KEY[("probation", "events")]
        return Rendered(lines, self._truth(spec, people, person, crn, offsets, defect, ident))

    @staticmethod
    def _crn(v: int) -> str:
        a, digits = divmod(v, 10**6)
        return f"{LETTERS[a]}{digits:06d}"

    # --- family court ------------------------------------------------------------------------
    def family(self, people: People, fam: dict[str, Frame]) -> dict[str, Rendered]:
        cases, parties = fam["cases"], fam["parties"]
        happened = np.flatnonzero(cases["happens"])
        case_no_all = np.empty(len(cases["date"]), dtype=object)
        years = ymd(cases["date"][happened])[0]
        serial = self.ids.take("family_case", len(happened))
        courts = self.ref.magistrates_courts.sample(self.rng, len(happened))
        case_no_all[happened] = [f"FD{y % 100:02d}P{v:07d}" for y, v in zip(years.tolist(), serial.tolist())]
        public = cases["public_law"][happened]
        crow = {
            "case_number": case_no_all[happened], "court": courts,
            "issue_date": fmt_event_dates(cases["date"][happened], "dmy_short"),
            "law_type": np.where(public, "Public", "Private").astype(object), "order_type": cases["order_type"][happened],
            "applicant_authority": np.where(public, np.array([f"{t} Council" for t in self._household_town(people, cases, happened)], dtype=object), "").astype(object),
        }
        cspec = EXTRACT_BY_KEY[("family", "cases")]
        clines, _ = encode_table(cspec, crow, np.full(len(happened), "", dtype=object), "issue_date", "dmy_short", "court", self.rng)

        person, when = parties["person"], parties["date"]
        n = len(person)
        ident = self.identities("family", people, person, when)
        party_id = np.array([f"FP{v:09d}" for v in self.ids.take("family_party", n).tolist()], dtype=object)
        # Adults' dates of birth are often not taken; children's usually are.
        is_child = parties["role"] == "child"
        not_taken = np.where(is_child, self.rng.random(n) < 0.1, self.rng.random(n) < 0.35)
        dy = np.where(not_taken, 0, ident.dob_y)
        rows = {
            "party_id": party_id, "case_number": case_no_all[parties["case"]], "party_role": parties["role"],
            "forenames": np.array([f"{f} {m}".strip() for f, m in zip(ident.forename, ident.middle_names)], dtype=object),
            "surname": ident.surname, "date_of_birth": fmt_dates(dy, ident.dob_m, ident.dob_d, "dmy_short"),
            "gender": np.where(ident.sex == "", "U", ident.sex).astype(object),
            "postcode": np.where(is_child, "", ident.postcode).astype(object),
        }
        spec = EXTRACT_BY_KEY[("family", "parties")]
        defect = _plant_defects(self.rng, self.model.for_source("family"), n, jsonl=False)
        lines, offsets = encode_table(spec, rows, defect, "date_of_birth", "dmy_short", "surname", self.rng)
        return {"family/cases": Rendered(clines),
                "family/parties": Rendered(lines, self._truth(spec, people, person, party_id, offsets, defect, ident))}

    @staticmethod
    def _household_town(people: People, cases: Frame, which: np.ndarray) -> np.ndarray:
        hh = cases["household"][which]
        first = np.searchsorted(people.household, hh)
        addr = people.address_index_at(first, cases["date"][which])
        return people.town[hh, addr]

    # --- civil possession claims ----------------------------------------------------------------
    def civil(self, people: People, civ: dict[str, Frame]) -> dict[str, Rendered]:
        claims, parties = civ["claims"], civ["parties"]
        happened = np.flatnonzero(claims["happens"])
        claim_no = np.empty(len(claims["date"]), dtype=object)
        years = ymd(claims["date"][happened])[0]
        serial = self.ids.take("civil_claim", len(happened))
        claim_no[happened] = [f"{LETTERS[v % 26]}{y % 100:02d}{v // 26:07d}" for y, v in zip(years.tolist(), serial.tolist())]
        crow = {
            "claim_number": claim_no[happened], "issue_date": fmt_event_dates(claims["date"][happened], "compact"),
            "claim_type": np.where(claims["mortgage"][happened], "Mortgage arrears", "Rent arrears").astype(object),
            "claimant_name": claims["claimant"][happened],
            "arrears_amount": np.array([f"{a:.2f}" for a in claims["arrears"][happened].tolist()], dtype=object),
            "outcome": claims["outcome"][happened],
        }
        cspec = EXTRACT_BY_KEY[("civil", "claims")]
        clines, _ = encode_table(cspec, crow, np.full(len(happened), "", dtype=object), "issue_date", "compact", "claimant_name", self.rng)

        person, when = parties["person"], parties["date"]
        n = len(person)
        ident = self.identities("civil", people, person, when)
        party_id = np.array([f"CP{v:09d}" for v in self.ids.take("civil_party", n).tolist()], dtype=object)
        title_draw = self.rng.random(n)
        titles = np.where(title_draw < 0.2, "", np.where(ident.sex == "M", "Mr",
                          np.where(title_draw < 0.55, "Mrs", np.where(title_draw < 0.8, "Ms", "Miss"))))
        name = np.array([" ".join(p for p in (t, f, m, s) if p) for t, f, m, s in
                         zip(titles.tolist(), ident.forename, ident.middle_names, ident.surname)], dtype=object)
        rows = {
            "party_id": party_id, "claim_number": claim_no[parties["case"]], "party_name": name,
            "address_line_1": ident.address_line, "address_line_2": ident.town, "postcode": ident.postcode,
        }
        spec = EXTRACT_BY_KEY[("civil", "parties")]
        defect = _plant_defects(self.rng, self.model.for_source("civil"), n, jsonl=False)
        lines, offsets = encode_table(spec, rows, defect, None, "compact", "party_name", self.rng)
        return {"civil/claims": Rendered(clines),
                "civil/parties": Rendered(lines, self._truth(spec, people, person, party_id, offsets, defect, ident))}
