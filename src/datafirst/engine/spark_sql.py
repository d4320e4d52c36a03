"""DuckDB-dialect SQL, as the stages write it, translated for Spark SQL.

sqlglot does the bulk of the translation. What it cannot know without types, or translates
into something with other semantics, is rewritten here on the parsed tree, before Spark's
SQL is generated, so that both engines give the same answer:

- list indexes `x[i]` (1-based in DuckDB, 0-based in Spark) become `element_at(x, i)`, which
  is 1-based and, like DuckDB, gives NULL past the end (indexes below 1 are refused);
- `regexp_replace` options: 'g' is Spark's only behaviour (without it the pattern must be
  anchored), 'i' becomes an inline `(?i)`;
- `TRY(decode(bytes))` (NULL for invalid UTF-8) becomes `try_validate_utf8`;
- `try_strptime(x, fmt | [fmts])` becomes `to_timestamp` tried in each format, with DuckDB's
  lenient one-or-two-digit day and month;
- `json_valid`, `json_type`, JSON paths ending in `[*]` (which give lists in DuckDB), and lists of
  paths (one call per path in an array);
- `year`, `month`, `day` and row numbers are BIGINT, as in DuckDB, so both engines' schemas agree;
- macros (`CREATE MACRO`) are expanded inline, and `getvariable('v')` reads the one-row view
  that `SET VARIABLE v = ...` makes (`variable_view`; not a Spark session variable, whose value
  Spark writes into query plans, and so into error messages, logs and its UI: the variable is
  the release's hashing key);
- similarity functions in Splink models are renamed between the engines' names.

A construct whose DuckDB meaning Spark cannot reproduce is refused with an error naming it,
rather than translated into something that runs and differs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlglot
from sqlglot import exp

# DuckDB strftime directives -> Spark datetime pattern letters. Day, month, hour, minute and
# second take one letter so that, as DuckDB's do, they accept one or two digits (two letters
# where another number is next to it, as in %Y%m%d).
_DATE_DIRECTIVES = {"%Y": "yyyy", "%m": "M", "%d": "d", "%H": "H", "%M": "m", "%S": "s",
                    "%b": "MMM", "%B": "MMMM", "%j": "D", "%f": "SSSSSS"}

# Similarity functions: DuckDB name -> the Spark name (Splink's similarity jar).
SIMILARITY_FUNCTIONS = {"jaro_winkler_similarity": "jaro_winkler", "jaro_similarity": "jaro_sim"}
# DuckDB's functions that sqlglot passes through under their own names, with their Spark names
# (Splink's array-intersect level is `array_length(list_intersect(..))` on DuckDB).
SPARK_NAMES = {**SIMILARITY_FUNCTIONS, "list_intersect": "array_intersect"}


class TranslationError(ValueError):
    """SQL that cannot be run on Spark with DuckDB's meaning."""


def spark_date_format(duckdb_format: str) -> str:
    """A DuckDB strptime format as a Spark datetime pattern."""
    out, literal, i = [], [], 0

    def flush() -> None:
        if literal:
            text = "".join(literal).replace("'", "''")
            out.append(text if re.fullmatch(r"[^A-Za-z]*", text) else f"'{text}'")
            literal.clear()

    while i < len(duckdb_format):
        two = duckdb_format[i:i + 2]
        if two in _DATE_DIRECTIVES:
            flush()
            letters = _DATE_DIRECTIVES[two]
            # Next to another number (as in %Y%m%d) a field must have its full width.
            if len(letters) == 1 and (duckdb_format[i + 2:i + 3] == "%" or (i >= 2 and duckdb_format[i - 2] == "%")):
                letters *= 2
            out.append(letters)
            i += 2
        elif two == "%y":
            # DuckDB reads 85 as 1985 (00-68 are 20xx), Spark as 2085 (always 20xx).
            raise TranslationError(f"two-digit years ('%y' in {duckdb_format!r}) are read as different centuries by "
                                   "DuckDB and Spark; ask for four-digit years, or run this source on DuckDB")
        elif two.startswith("%"):
            raise TranslationError(f"date format directive {two!r} in {duckdb_format!r} has no Spark equivalent here")
        else:
            literal.append(duckdb_format[i])
            i += 1
    flush()
    return "".join(out)


def _literal_strings(node: exp.Expression) -> list[str] | None:
    if isinstance(node, exp.Literal) and node.is_string:
        return [node.this]
    if isinstance(node, exp.Array) and all(isinstance(e, exp.Literal) and e.is_string for e in node.expressions):
        return [e.this for e in node.expressions]
    return None


def variable_view(name: str) -> str:
    """The temp view holding a variable's value on Spark (one row, column `value`)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise TranslationError(f"variable name {name!r} is not a plain identifier")
    return f"_datafirst_variable_{name}"


def _parse_spark(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="spark")


def _fn_name(node: exp.Expression) -> str:
    if isinstance(node, exp.JarowinklerSimilarity):  # sqlglot knows DuckDB's name for it
        return "jaro_winkler_similarity"
    return node.this.lower() if isinstance(node, exp.Anonymous) and isinstance(node.this, str) else ""


def _renamed(node: exp.Expression, names: dict[str, str]) -> exp.Expression:
    """A function call (a similarity, a list function) under the other engine's name."""
    name = _fn_name(node)
    if name not in names:
        return node
    args = [node.this, node.expression] if isinstance(node, exp.JarowinklerSimilarity) else node.expressions
    return exp.Anonymous(this=names[name], expressions=args)


def _json_array_path(path: exp.Expression) -> str | None:
    """The path before a trailing `[*]`, or None if the path does not end in one."""
    text = path.sql("duckdb").strip("'")
    return text[:-3] if text.endswith("[*]") else None


class SparkTranslator:
    """Translates one statement at a time; holds the macros defined so far.

    `parquet_view(paths, union_by_name)` is called for every `read_parquet(...)` and returns
    the name of a view over those files (the engine creates it)."""

    def __init__(self, parquet_view: Callable[[list[str], bool], str]):
        self.parquet_view = parquet_view
        self.macros: dict[str, tuple[list[str], exp.Expression]] = {}

    # --- statements -------------------------------------------------------------------------
    def parse(self, sql: str) -> exp.Expression:
        try:
            return sqlglot.parse_one(sql, read="duckdb")
        except sqlglot.errors.ParseError as err:
            raise TranslationError(f"cannot parse SQL for Spark: {err}") from err

    def define_macro(self, node: exp.Create) -> str:
        udf = node.this
        name = udf.this.name.lower()
        params = [p.name for p in udf.expressions]
        self.macros[name] = (params, node.expression)
        return name

    def query(self, node: exp.Expression) -> str:
        """A translated query (or expression) as Spark SQL text."""
        node = self.rewrite(node.copy())
        return node.sql("spark", unsupported_level=sqlglot.ErrorLevel.RAISE)

    # --- expressions ------------------------------------------------------------------------
    def rewrite(self, node: exp.Expression) -> exp.Expression:
        return _post_order(self._expand_macros(node), self._rewrite_node)

    def _expand_macros(self, node: exp.Expression) -> exp.Expression:
        if not self.macros:
            return node

        def expand(n: exp.Expression) -> exp.Expression:
            name = _fn_name(n)
            if name in self.macros:
                params, body = self.macros[name]
                args = dict(zip(params, n.expressions))
                expanded = body.copy().transform(
                    lambda c: args[c.name].copy() if isinstance(c, exp.Column) and not c.table and c.name in args else c)
                return exp.Paren(this=self._expand_macros(expanded))
            return n

        return node.transform(expand)

    def _rewrite_node(self, n: exp.Expression) -> exp.Expression:
        name = _fn_name(n)
        if isinstance(n, exp.ReadParquet):
            return self._read_parquet(n)
        if isinstance(n, exp.Try):
            inner = n.this
            if isinstance(inner, exp.Decode):
                return _parse_spark(f"try_validate_utf8(CAST({inner.this.sql('spark')} AS STRING))")
            return inner
        if isinstance(n, exp.Bracket) and len(n.expressions) == 1 and not (
                isinstance(n.expressions[0], exp.Literal) and n.expressions[0].is_string):
            # sqlglot keeps a literal index 0-based and a computed one as written (1-based, as
            # in DuckDB); element_at is 1-based.
            index = n.expressions[0]
            if isinstance(index, exp.Neg) or (isinstance(index, exp.Literal) and int(index.this) + 1 <= 0):
                # DuckDB counts negative indexes from the end and gives NULL for 0; sqlglot
                # shifts them as if 0-based, and element_at fails on 0.
                raise TranslationError(f"a list index below 1 reads differently on Spark: {n.sql('duckdb')}")
            if isinstance(index, exp.Literal):
                index = exp.Literal.number(int(index.this) + 1)
            return exp.Anonymous(this="element_at", expressions=[n.this, index])
        if name == "try_strptime" or name == "strptime":
            formats = _literal_strings(n.expressions[1])
            if formats is None:
                raise TranslationError("strptime needs literal formats to run on Spark")
            value = n.expressions[0]
            tries = [exp.Anonymous(this="to_timestamp", expressions=[value.copy(), exp.Literal.string(spark_date_format(f))])
                     for f in formats]
            return tries[0] if len(tries) == 1 else exp.Coalesce(this=tries[0], expressions=tries[1:])
        if isinstance(n, exp.StrToTime):
            fmt = n.args.get("format")
            return exp.Anonymous(this="to_timestamp", expressions=[
                n.this, exp.Literal.string(spark_date_format(_python_format(fmt)))])
        if name == "json_valid":
            return exp.Paren(this=exp.Not(this=exp.Is(
                this=exp.Anonymous(this="try_parse_json", expressions=[n.expressions[0]]), expression=exp.Null())))
        if isinstance(n, (exp.JSONType, exp.JSONExtract, exp.JSONExtractScalar)) and isinstance(n.expression, exp.Array):
            # DuckDB parses a line once for a list of paths and gives a list; Spark gets a
            # call per path, in an array.
            return exp.Array(expressions=[
                self._rewrite_node(n.__class__(this=n.this.copy(), expression=path.copy()))
                for path in n.expression.expressions])
        if isinstance(n, exp.JSONType):
            text, path = n.this.sql("spark"), n.expression.sql("spark")
            return _parse_spark(f"regexp_extract(upper(schema_of_variant(variant_get(try_parse_json({text}), {path}))), "
                                "'^[A-Z]+', 0)")
        if isinstance(n, (exp.JSONExtract, exp.JSONExtractScalar)):
            base = _json_array_path(n.expression)
            if base is not None:
                return _parse_spark(f"from_json(get_json_object({n.this.sql('spark')}, '{base}'), 'array<string>')")
            return n
        if (isinstance(n, exp.Window) and isinstance(n.this, exp.RowNumber) and not n.args.get("order")
                and not n.args.get("partition_by")):
            # `row_number() OVER ()` numbers rows in no order (a row's own id); Spark refuses a
            # window without an order, and its own unordered id is this.
            return exp.Cast(this=exp.Anonymous(this="monotonically_increasing_id", expressions=[]),
                            to=exp.DataType.build("BIGINT"))
        if isinstance(n, exp.Window) and isinstance(n.this, (exp.RowNumber, exp.Rank, exp.DenseRank)):
            return exp.Cast(this=n, to=exp.DataType.build("BIGINT"))
        if isinstance(n, (exp.Year, exp.Month, exp.Day)):
            return exp.Cast(this=n, to=exp.DataType.build("BIGINT"))
        if name == "getvariable":
            (var,) = n.expressions
            return _parse_spark(f"(SELECT value FROM {variable_view(var.this)})")
        if isinstance(n, exp.RegexpReplace):
            modifiers = n.args.get("modifiers")
            options = modifiers.name if modifiers is not None else ""
            if set(options) - {"g", "i"}:
                raise TranslationError(f"regexp_replace options other than 'g' and 'i' have no Spark form: "
                                       f"{n.sql('duckdb')}")
            if "g" not in options and not _anchored(n.expression.name if isinstance(n.expression, exp.Literal) else ""):
                raise TranslationError(f"regexp_replace without 'g' replaces the first match only in DuckDB; "
                                       f"Spark replaces every match. Anchor the pattern or add 'g': {n.sql('duckdb')}")
            if "i" in options:
                if not isinstance(n.expression, exp.Literal):
                    raise TranslationError(f"regexp_replace with 'i' needs a literal pattern on Spark: {n.sql('duckdb')}")
                n.set("expression", exp.Literal.string("(?i)" + n.expression.name))
            n.set("modifiers", None)
            return n
        different = {"hash": "Spark's hash is another function", "dayofweek": "Sunday is 0 in DuckDB, 1 in Spark",
                     "ordered list": "Spark's collect_list drops the order"}
        kind = ("hash" if name == "hash" else "dayofweek" if isinstance(n, exp.DayOfWeek)
                else "ordered list" if isinstance(n, exp.ArrayAgg) and n.find(exp.Order) else None)
        if kind:
            raise TranslationError(f"{n.sql('duckdb')} gives another answer on Spark ({different[kind]})")
        return _renamed(n, SPARK_NAMES)

    def _read_parquet(self, n: exp.ReadParquet) -> exp.Expression:
        paths: list[str] = []
        union_by_name = False
        for arg in n.expressions:
            if isinstance(arg, exp.EQ):
                if arg.this.name.lower() == "union_by_name":
                    union_by_name = arg.expression.this is True or str(arg.expression.this).lower() == "true"
                continue
            strings = _literal_strings(arg)
            if strings is None:
                raise TranslationError(f"read_parquet needs literal paths to run on Spark: {n.sql('duckdb')}")
            paths.extend(strings)
        return exp.to_identifier(self.parquet_view(paths, union_by_name))  # the name inside the Table node


def _anchored(pattern: str) -> bool:
    """Whether a pattern can match at one place only (so 'first match' and 'every match' agree):
    anchored at the start, or at the end by an unescaped '$', with no alternation that could
    escape the anchor."""
    depth, i, in_class = 0, 0, False
    while i < len(pattern):  # an alternation outside every group could match away from the anchor
        ch = pattern[i]
        if ch == "\\":
            i += 1
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return False
        i += 1
    return pattern.startswith("^") or (pattern.endswith("$") and not pattern.endswith("\\$"))


def _post_order(node: exp.Expression, fn: Callable[[exp.Expression], exp.Expression]) -> exp.Expression:
    """Apply `fn` to every node, children first, so a rewrite that wraps a node (a cast, say)
    wraps children that are already rewritten."""
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            node.set(key, _post_order(value, fn))
        elif isinstance(value, list):
            node.set(key, [_post_order(v, fn) if isinstance(v, exp.Expression) else v for v in value])
    return fn(node)


def _python_format(fmt: exp.Expression | None) -> str:
    """sqlglot keeps strptime formats in Python's directives, which are DuckDB's."""
    if not isinstance(fmt, exp.Literal):
        raise TranslationError("strptime needs a literal format to run on Spark")
    return fmt.this


def translate_condition(sql: str, from_dialect: str, to_dialect: str) -> str:
    """A Splink comparison or blocking condition in another engine's dialect."""
    if from_dialect == to_dialect:
        return sql
    node = sqlglot.parse_one(sql, read=from_dialect)
    if from_dialect == "duckdb" and to_dialect == "spark":
        node = node.transform(lambda n: _renamed(n, SPARK_NAMES))
    elif from_dialect == "spark" and to_dialect == "duckdb":
        node = node.transform(lambda n: _renamed(n, {v: k for k, v in SIMILARITY_FUNCTIONS.items()}))
    else:
        raise TranslationError(f"no translation from {from_dialect} to {to_dialect}")
    return node.sql(to_dialect, unsupported_level=sqlglot.ErrorLevel.RAISE)


def model_for_dialect(model: dict, dialect: str) -> dict:
    """A saved Splink model (settings dict) with its SQL in `dialect`: a model trained on one
    engine links on the other with the same parameters."""
    source = model.get("sql_dialect", "duckdb")
    if source == dialect:
        return model
    out = dict(model, sql_dialect=dialect)
    out["comparisons"] = []
    for comparison in model.get("comparisons", []):
        levels = []
        for level in comparison.get("comparison_levels", []):
            cond = level.get("sql_condition", "")
            level = dict(level)
            if cond.strip().upper() != "ELSE":
                level["sql_condition"] = translate_condition(cond, source, dialect)
            levels.append(level)
        out["comparisons"].append(dict(comparison, comparison_levels=levels))
    rules = []
    for rule in model.get("blocking_rules_to_generate_predictions", []):
        if isinstance(rule, dict):
            rules.append(dict(rule, blocking_rule=translate_condition(rule["blocking_rule"], source, dialect),
                              sql_dialect=dialect))
        else:
            rules.append(translate_condition(rule, source, dialect))
    out["blocking_rules_to_generate_predictions"] = rules
    return out
