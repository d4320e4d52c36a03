"""The default "research" project template: every person-level and content table of a release,
coarsened the way a typical approved project receives it, with its quasi-identifiers declared.

Built from the release's dictionary.json alone (its tables, columns, declared kinds, code lists
and harmonised columns), so it fits any release, not only the synthetic world's:
- ids (`hashed_id`) kept (the package re-keys them per project), flags and scores kept;
- every date to its month; a year of birth to a 10-year age band; a postcode district to its area;
- a coded column with harmonised siblings (ethnicity) becomes its coarsest sibling (the 5 groups),
  the recorded code and the finer siblings dropped; another code kept where coarse (at most
  COARSE_CODES values), dropped where fine (a court, an offence, an establishment);
- a number with few distinct values kept, any other banded on a 1-2-5 scale within its
  declared range (an amount, a sentence length, a count);
- quasi-identifiers per table: its sex, year of birth, postcode district, ethnic group, first
  date (the event an attacker is most likely to know) and banded amounts, those it delivers.
Code-list tables are reference data, not about people: delivered as they are.

`fit_template` then measures the template on the release's tables (risk.measure) and, for a
table still below k beyond the suppression allowed, coarsens further one step at a time, least
research value lost first (the postcode area dropped, 20-year age bands, dates to year, ...),
stopping at the first step that reaches k within the budget.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import yaml

from ..engine import Engine
from .projects import Band, Coarsen, Disclosure, Project, TopCode, Treatment
from .risk import coarsened, measure

COARSE_CODES = 20  # a code with more values than this singles people out (62 courts, 92 offences)
FEW_VALUES = 20  # a number with no more distinct values than this is kept as it is
DEMOGRAPHICS = ("sex", "year_of_birth", "postcode_district")
AGE_BAND_WIDTH = 10


class TemplateError(Exception):
    """A release folder without a readable dictionary.json."""


def _dictionary(release_dir: Path) -> list[dict]:
    path = release_dir / "dictionary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["tables"]
    except (OSError, ValueError, KeyError) as exc:
        raise TemplateError(f"{path}: cannot read the release's dictionary ({exc}); give a release folder "
                            "(releases/vNNNN) of a built release") from None


def _bands(low: float | None, high: float | None) -> list[float]:
    """1-2-5 edges from the declared minimum (0 if none or below) up to the declared maximum
    (100 when none is declared: a count's last band is "100+")."""
    start = max(low or 0, 0)
    top = high if high is not None else 100
    edges, scale = [start], 1
    while scale <= top:
        edges += [e for e in (scale, 2 * scale, 5 * scale) if start < e <= top]
        scale *= 10
    return edges


def _treatment(column: dict, reference_date: date, coarsest_sibling: dict[str, str]) -> Treatment:
    name, declared = column["name"], column.get("declared", {})
    kind = declared.get("kind")
    if kind in ("hashed_id", "flag"):
        return "keep"
    if kind == "date" or column.get("type", "").upper().startswith(("DATE", "TIMESTAMP")):
        return Coarsen(coarsen="month")
    if name == "year_of_birth":
        return Coarsen(coarsen="age_band", reference_date=reference_date, width=AGE_BAND_WIDTH)
    if name == "postcode_district":
        return Coarsen(coarsen="area")
    source = column.get("harmonised_from", name)
    if source in coarsest_sibling:  # a recorded code with harmonised siblings, or one of them
        return "keep" if coarsest_sibling[source] == name else "drop"
    if kind == "number":
        maximum = declared.get("max")
        if (maximum is not None and maximum <= 1) or (column.get("distinct_values") or 0) <= FEW_VALUES:
            return "keep"  # a score or probability, or a number with few values
        return Band(band=_bands(declared.get("min"), maximum))
    if kind == "code":
        values = declared.get("values") or column.get("allowed_values") or []
        return "keep" if column.get("type", "").endswith("[]") or len(values) <= COARSE_CODES else "drop"
    return "drop"  # a column the dictionary declares no kind for is not delivered by default


def _coarsest_siblings(columns: list[dict]) -> dict[str, str]:
    """Recorded column -> its harmonised sibling with the fewest values (e.g. ethnicity -> ethnic_group_5)."""
    out: dict[str, tuple[int, str]] = {}
    for c in columns:
        source = c.get("harmonised_from")
        if source:
            n = len(c.get("declared", {}).get("values") or c.get("allowed_values") or []) or 10**9
            if source not in out or n < out[source][0]:
                out[source] = (n, c["name"])
    return {s: name for s, (_, name) in out.items()}


def research_template(release_dir: Path, project_id: str = "research", *, title: str = "Research project (template)",
                      legal_basis: str = "to be completed by the project", approval_reference: str = "to be completed",
                      tre: str = "SRS", expires: date | None = None, researchers: list[str] | None = None,
                      reference_date: date | None = None, k: int = 5, max_suppressed_share: float = 0.02) -> Project:
    """The research template for a release (see the module's docstring)."""
    reference_date = reference_date or date(date.today().year, 1, 1)
    tables: dict[str, dict[str, Treatment]] = {}
    qis: dict[str, list[str]] = {}
    for table in _dictionary(release_dir):
        if table.get("code_list"):  # reference data about codes, not about people: delivered as it is
            tables[table["name"]] = {c["name"]: "keep" for c in table["columns"]}
            continue
        siblings = _coarsest_siblings(table["columns"])
        treated = {c["name"]: _treatment(c, reference_date, siblings) for c in table["columns"]}
        tables[table["name"]] = treated
        delivered = [c["name"] for c in table["columns"] if treated[c["name"]] != "drop"]
        dates = [c for c in delivered if isinstance(treated[c], Coarsen) and treated[c].coarsen == "month"]
        groups = [siblings[s] for s in siblings if siblings[s] in delivered]
        # Amounts are as telling as a date (the issue: an arrears amount alone is unique per claim).
        banded = [c for c in delivered if isinstance(treated[c], Band)]
        declared = [c for c in DEMOGRAPHICS if c in delivered] + groups + dates[:1] + banded
        if declared:
            qis[table["name"]] = declared
    return Project(id=project_id, title=title, legal_basis=legal_basis, approval_reference=approval_reference,
                   tre=tre, expires=expires or date.today() + timedelta(days=365),
                   researchers=researchers or ["to be completed"], tables=tables,
                   disclosure=Disclosure(quasi_identifiers=qis, k=k, max_suppressed_share=max_suppressed_share,
                                         max_unique_share=max_suppressed_share))


def _ladder(treatments: dict[str, Treatment], qis: list[str]) -> list[tuple[str, Treatment]]:
    """The further steps for a table's quasi-identifiers, least research value lost first: the
    postcode area dropped; amounts in powers of ten; 20-year age bands; dates to their year; the
    ethnic group dropped; then sex, the age band, the date and the amounts dropped."""
    dates = [c for c in qis if isinstance(treatments[c], Coarsen) and treatments[c].coarsen in ("week", "month")]
    ages = [c for c in qis if isinstance(treatments[c], Coarsen) and treatments[c].coarsen == "age_band"]
    bands = [c for c in qis if isinstance(treatments[c], Band)]
    others = [c for c in qis if c not in dates + ages + bands and c not in DEMOGRAPHICS]
    steps: list[tuple[str, Treatment]] = [(c, "drop") for c in qis if c == "postcode_district"]
    # an amount's 1-2-5 bands to powers of ten
    steps += [(c, Band(band=[e for e in treatments[c].band if e == 0 or str(int(e)).lstrip("1").strip("0") == ""]))
              for c in bands]
    steps += [(c, treatments[c].model_copy(update={"width": 20})) for c in ages if treatments[c].width < 20]
    steps += [(c, Coarsen(coarsen="year")) for c in dates]
    steps += [(c, "drop") for c in others + [c for c in qis if c == "sex"] + ages + dates + bands]
    return steps


def fit_template(engine: Engine, release_dir: Path, project: Project) -> tuple[Project, list[str]]:
    """The project with each table's quasi-identifiers coarsened, step by step along `_ladder`,
    until at most `max_suppressed_share` of its rows are in classes below k (measured on the
    release's tables), and each step taken, in words."""
    d = project.disclosure
    tables = {t: dict(cols) for t, cols in project.tables.items()}
    qis = {t: list(cols) for t, cols in d.quasi_identifiers.items()}
    changes: list[str] = []
    for table, columns in qis.items():
        relation = engine.parquet(release_dir / "tables" / f"{table}.parquet")

        def below_k(treatments: dict[str, Treatment], kept: list[str], relation: str = relation) -> float:
            exprs = [coarsened(f'"{c}"', treatments[c]) for c in kept]
            return measure(engine, relation, exprs, [], d.k).below_k_share

        share = below_k(tables[table], columns)
        for column, step in _ladder(tables[table], list(columns)):
            if share <= d.max_suppressed_share:
                break
            tables[table][column] = step
            if step == "drop":
                columns.remove(column)
            share = below_k(tables[table], columns)
            changes.append(f"{table}: {column} " + ("dropped" if step == "drop" else f"to {_label(step)}")
                           + f" ({share * 100:.1f}% of rows then in classes below k={d.k})")
    fitted = project.model_copy(update={"tables": tables, "disclosure": d.model_copy(update={"quasi_identifiers": {
        t: c for t, c in qis.items() if c}})})
    return Project.model_validate(fitted.model_dump()), changes


def _label(treatment: Treatment) -> str:
    if isinstance(treatment, Coarsen):
        return f"{treatment.width}-year age bands" if treatment.coarsen == "age_band" else treatment.coarsen
    if isinstance(treatment, (Band, TopCode)):
        return ", ".join(f"{k} {v}" for k, v in _written(treatment.model_dump()).items())
    return str(treatment)


def project_yaml(project: Project, changes: list[str]) -> str:
    """The project as a YAML file for governance staff to complete and register: the template's
    fitting steps as comments at the top, every treatment written out."""
    head = ["# A research project drafted from the release by `datafirst project template`.",
            "# Complete title, legal_basis, approval_reference, tre, expires and researchers; remove the",
            "# tables and columns the project does not need; then `datafirst project add` this file."]
    head += ["# Fitted to the release (measured): " + change for change in changes]
    data = project.model_dump(mode="json")
    data["tables"] = {t: {c: _written(x) for c, x in cols.items()} for t, cols in data["tables"].items()}
    body = yaml.safe_dump(data, sort_keys=False, width=120, default_flow_style=None)
    return "\n".join(head) + "\n" + body


def _written(treatment: object) -> object:
    """A treatment as a person writes it: no empty keys, a width only on age bands, whole numbers whole."""
    if not isinstance(treatment, dict):
        return treatment
    shown = {k: v for k, v in treatment.items() if v is not None and not (k == "width" and treatment.get("coarsen")
                                                                         != "age_band")}
    return {k: [int(e) if float(e).is_integer() else e for e in v] if isinstance(v, list) else
            int(v) if isinstance(v, float) and v.is_integer() else v for k, v in shown.items()}
