"""What happens to the world's people: criminal journeys, family cases, civil possession claims.

Each function returns plain column arrays ("frames") holding the true facts; the source
extracts are rendered from them in extracts.py. `person` columns index the chunk's People.
"""

from __future__ import annotations

import numpy as np

from .population import PERIOD_END, PERIOD_START, People, random_dates
from .reference import Reference

Frame = dict[str, np.ndarray]

LAST_EVENT = np.datetime64("2024-09-30")
MODE_RANK = {"summary": 0, "either_way": 1, "indictable": 2}

MAGS_SENTENCES = (("fine", "conditional_discharge", "community_order", "suspended_sentence", "custody"),
                  (0.5, 0.1, 0.18, 0.08, 0.14))
CROWN_SENTENCES = (("custody", "suspended_sentence", "community_order", "fine", "conditional_discharge"),
                   (0.55, 0.2, 0.15, 0.05, 0.05))
REQUIREMENTS = (
    ("unpaid_work", "rehabilitation_activity", "curfew", "drug_rehabilitation", "alcohol_treatment",
     "mental_health_treatment", "accredited_programme", "exclusion", "prohibited_activity"),
    (0.3, 0.3, 0.12, 0.07, 0.06, 0.04, 0.06, 0.03, 0.02),
)
LICENCE_CONDITIONS = (("licence_curfew", "licence_exclusion_zone", "licence_drug_testing", "licence_programme"),
                      (0.35, 0.25, 0.25, 0.15))
LENDERS = np.array(["Nationwide Building Society", "Lloyds Bank plc", "NatWest Bank plc", "Santander UK plc",
                    "Barclays Bank UK plc", "Coventry Building Society", "Kensington Mortgage Company",
                    "Together Commercial Finance Ltd"], dtype=object)


def _pick(rng: np.random.Generator, options: tuple, n: int) -> np.ndarray:
    values, probs = options
    return np.array(values, dtype=object)[rng.choice(len(values), size=n, p=np.array(probs) / sum(probs))]


def _days(rng: np.random.Generator, lo: int, hi: int, n: int) -> np.ndarray:
    return rng.integers(lo, hi + 1, n).astype("timedelta64[D]")


def _sort_by(person: np.ndarray, date: np.ndarray) -> np.ndarray:
    return np.lexsort((date.astype(np.int64), person))


def criminal_journeys(rng: np.random.Generator, ref: Reference, people: People) -> dict[str, Frame]:
    offenders = np.flatnonzero(people.is_offender)
    start = np.maximum(PERIOD_START, people.dob[offenders] + np.timedelta64(5844, "D"))  # 16th birthday
    ok = start < LAST_EVENT - 90
    offenders, start = offenders[ok], start[ok]
    n_cases = 1 + np.minimum(rng.negative_binomial(0.8, 0.35, len(offenders)), 25)
    person = np.repeat(offenders, n_cases)
    hearing = random_dates(rng, np.repeat(start, n_cases), np.full(len(person), LAST_EVENT))
    order = _sort_by(person, hearing)
    person, hearing = person[order], hearing[order]
    n = len(person)

    # Offences: one or more per case; the most serious decides the route to court.
    n_off = 1 + np.minimum(rng.poisson(0.6, n), 5)
    off_case = np.repeat(np.arange(n), n_off)
    off_idx = ref.offence_pool.sample(rng, len(off_case)).astype(np.int64)
    modes = np.array([MODE_RANK[o["mode"]] for o in ref.offences])[off_idx]
    first = np.cumsum(n_off) - n_off
    worst = np.maximum.reduceat(modes, first)
    offence_date = hearing - _days(rng, 7, 120, n)
    off_seq = np.arange(len(off_case)) - first[off_case] + 1
    off_date = offence_date[off_case] - np.where(off_seq > 1, rng.integers(0, 30, len(off_case)), 0).astype("timedelta64[D]")

    sent = (worst == 2) | ((worst == 1) & (rng.random(n) < 0.3))
    mags_outcome = np.where(sent, "sent_to_crown", _pick(rng, (("guilty", "dismissed", "withdrawn"), (0.82, 0.08, 0.1)), n))
    mags_sentence = np.where(mags_outcome == "guilty", _pick(rng, MAGS_SENTENCES, n), "").astype(object)
    mags_sentence_date = hearing + _days(rng, 0, 60, n)
    mags_custody_days = np.where(mags_sentence == "custody", rng.integers(14, 183, n), 0)
    plea = np.where(rng.random(len(off_case)) < 0.7, "guilty", "not_guilty").astype(object)
    verdict = np.where(plea == "guilty", "guilty", _pick(rng, (("guilty", "not_guilty", "withdrawn"), (0.5, 0.25, 0.25)), len(off_case)))

    cases: Frame = {
        "person": person, "date": hearing, "offence_date": offence_date,
        "court": ref.magistrates_courts.sample(rng, n), "outcome": mags_outcome.astype(object),
        "sentence": mags_sentence, "sentence_date": mags_sentence_date,
        "custody_days": mags_custody_days, "sent_to_crown": sent, "n_offences": n_off,
    }
    offences: Frame = {
        "case": off_case, "seq": off_seq, "offence": off_idx, "offence_date": off_date,
        "plea": plea, "verdict": verdict.astype(object),
    }

    # Crown Court: one row per defendant per case sent up from the magistrates.
    c_case = np.flatnonzero(sent)
    m = len(c_case)
    receipt = hearing[c_case] + _days(rng, 7, 56, m)
    c_outcome = _pick(rng, (("guilty", "acquitted", "other"), (0.85, 0.1, 0.05)), m)
    c_sentence_date = receipt + _days(rng, 30, 300, m)
    pending = c_sentence_date > PERIOD_END
    c_outcome = np.where(pending, "awaiting", c_outcome).astype(object)
    c_sentence = np.where(c_outcome == "guilty", _pick(rng, CROWN_SENTENCES, m), "").astype(object)
    c_custody_days = np.where(c_sentence == "custody",
                              np.clip(np.round(rng.lognormal(6.4, 0.8, m)), 90, 6000).astype(np.int64), 0)
    main_offence = off_idx[first[c_case]]
    crown: Frame = {
        "person": person[c_case], "date": receipt, "mags_case": c_case, "court": ref.crown_courts.sample(rng, m),
        "outcome": c_outcome, "sentence": c_sentence, "sentence_date": c_sentence_date,
        "custody_days": c_custody_days, "main_offence": main_offence,
    }

    # Sentences from both courts, in time order per person, drive prison and probation.
    s_person = np.concatenate([person, crown["person"]])
    s_type = np.concatenate([mags_sentence, c_sentence])
    s_date = np.concatenate([mags_sentence_date, c_sentence_date])
    s_days = np.concatenate([mags_custody_days, c_custody_days])
    keep = s_type != ""
    s_person, s_type, s_date, s_days = s_person[keep], s_type[keep], s_date[keep], s_days[keep]
    order = _sort_by(s_person, s_date)
    s_person, s_type, s_date, s_days = s_person[order], s_type[order], s_date[order], s_days[order]

    cust = np.flatnonzero((s_type == "custody") & (s_date <= PERIOD_END))
    k = len(cust)
    release = s_date[cust] + (s_days[cust] // 2).astype("timedelta64[D]")
    released = release <= PERIOD_END
    c_person = s_person[cust]
    first_journey = np.ones(k, dtype=bool)
    first_journey[1:] = c_person[1:] != c_person[:-1]
    new_number = first_journey | (rng.random(k) < 0.15)  # a prisoner number is usually reused
    custody: Frame = {
        "person": c_person, "date": s_date[cust], "release": release, "released": released,
        "sentence_days": s_days[cust], "establishment": ref.prisons.sample(rng, k),
        "new_number": new_number,
    }

    # Probation: community and suspended sentences, and licence supervision after release.
    community = np.flatnonzero(((s_type == "community_order") | ((s_type == "suspended_sentence") & (rng.random(len(s_type)) < 0.7)))
                               & (s_date <= PERIOD_END))
    p_person = np.concatenate([s_person[community], c_person[released]])
    p_date = np.concatenate([s_date[community], release[released]])
    p_type = np.concatenate([s_type[community], np.full(int(released.sum()), "licence", dtype=object)])
    p_length = np.concatenate([rng.integers(6, 37, len(community)), np.maximum(12, s_days[cust][released] // 60)])
    order = _sort_by(p_person, p_date)
    p_person, p_date, p_type, p_length = p_person[order], p_date[order], p_type[order], p_length[order]
    q = len(p_person)
    is_licence = p_type == "licence"
    n_req = np.where(is_licence, rng.binomial(2, 0.35, q), 1 + rng.binomial(2, 0.35, q))
    r_event = np.repeat(np.arange(q), n_req)
    r_type = np.where(is_licence[r_event], _pick(rng, LICENCE_CONDITIONS, len(r_event)), _pick(rng, REQUIREMENTS, len(r_event)))
    r_start = p_date[r_event] + _days(rng, 0, 30, len(r_event))
    r_amount = np.where(r_type == "unpaid_work", rng.integers(40, 301, len(r_event)),
                        np.where(r_type == "rehabilitation_activity", rng.integers(5, 61, len(r_event)), rng.integers(1, 25, len(r_event))))
    r_unit = np.where(r_type == "unpaid_work", "hours", np.where(r_type == "rehabilitation_activity", "days", "months")).astype(object)
    probation: Frame = {"person": p_person, "date": p_date, "sentence": p_type, "length_months": p_length}
    requirements: Frame = {"event": r_event, "type": r_type.astype(object), "start": r_start, "amount": r_amount, "unit": r_unit}
    return {"cases": cases, "offences": offences, "crown": crown, "custody": custody,
            "probation": probation, "requirements": requirements}


def _household_members(people: People, households: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(case index, person) pairs listing every member of each case's household."""
    starts = np.searchsorted(people.household, households, side="left")
    ends = np.searchsorted(people.household, households, side="right")
    sizes = ends - starts
    case = np.repeat(np.arange(len(households)), sizes)
    person = np.repeat(starts, sizes) + (np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes))
    return case, person


def family_cases(rng: np.random.Generator, people: People) -> dict[str, Frame]:
    n_hh = len(people.household_has_children)
    eligible = np.flatnonzero(people.household_has_children & (rng.random(n_hh) < 0.12))
    repeat = eligible[rng.random(len(eligible)) < 0.15]
    hh = np.sort(np.concatenate([eligible, repeat]))
    date = random_dates(rng, np.full(len(hh), PERIOD_START), np.full(len(hh), LAST_EVENT))
    public = rng.random(len(hh)) < 0.3
    case, person = _household_members(people, hh)
    age_days = (date[case] - people.dob[person]).astype(np.int64)
    role = people.role[person]
    adult = role != "child"
    child_ok = (role == "child") & (age_days >= 0) & (age_days < 18 * 365)
    keep = adult | child_ok
    case, person, role = case[keep], person[keep], role[keep]
    # Cases with no child of age at that date do not happen.
    has_child = np.bincount(case[role == "child"], minlength=len(hh)) > 0
    keep = has_child[case]
    case, person, role = case[keep], person[keep], role[keep]
    party_role = np.where(role == "child", "child",
                          np.where(public[case], "respondent", np.where(role == "adult1", "applicant", "respondent")))
    cases: Frame = {"household": hh, "date": date, "public_law": public, "happens": has_child,
                    "order_type": np.where(public, _pick(rng, (("care_order", "supervision_order", "emergency_protection"), (0.6, 0.3, 0.1)), len(hh)),
                                           _pick(rng, (("child_arrangements", "prohibited_steps", "specific_issue"), (0.8, 0.12, 0.08)), len(hh)))}
    parties: Frame = {"case": case, "person": person, "date": date[case], "role": party_role.astype(object)}
    return {"cases": cases, "parties": parties}


def civil_claims(rng: np.random.Generator, people: People) -> dict[str, Frame]:
    n_hh = len(people.household_has_children)
    hh = np.flatnonzero(rng.random(n_hh) < 0.05)
    date = random_dates(rng, np.full(len(hh), PERIOD_START), np.full(len(hh), LAST_EVENT))
    mortgage = rng.random(len(hh)) < 0.3
    case, person = _household_members(people, hh)
    role = people.role[person]
    age_days = (date[case] - people.dob[person]).astype(np.int64)
    keep = (role != "child") & (age_days >= 18 * 365)
    case, person = case[keep], person[keep]
    happens = np.bincount(case, minlength=len(hh)) > 0
    addr = people.address_index_at(np.searchsorted(people.household, hh), date)
    town = people.town[hh, addr]
    claimant = np.where(
        mortgage, LENDERS[rng.integers(0, len(LENDERS), len(hh))],
        np.where(rng.random(len(hh)) < 0.6, town + " Housing Association", town + " City Council"))
    claims: Frame = {"household": hh, "date": date, "mortgage": mortgage, "claimant": claimant.astype(object),
                     "happens": happens,
                     "outcome": _pick(rng, (("possession_order", "suspended_possession_order", "dismissed", "adjourned"),
                                            (0.45, 0.3, 0.1, 0.15)), len(hh)),
                     "arrears": np.round(rng.lognormal(7.5, 0.9, len(hh)), 2)}
    parties: Frame = {"case": case, "person": person, "date": date[case]}
    return {"claims": claims, "parties": parties}
