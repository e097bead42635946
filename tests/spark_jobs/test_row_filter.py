"""``where`` is data: Spark's parser decides what it is, and only plain predicates over the input pass."""

from __future__ import annotations

import pytest

from spark_jobs.row_filter import RowFilterError, filter_rows

ROWS = [(1, "en", "hello world", [1, 2]), (2, "de", "hallo", [3]), (3, "en", "hi", [])]


@pytest.fixture(scope="module")
def documents(spark):
    return spark.createDataFrame(ROWS, "id long, lang string, text string, tags array<int>")


@pytest.mark.parametrize(
    ("where", "ids"),
    [
        ("lang = 'en'", [1, 3]),
        ("lower(lang) = 'en' AND length(text) > 3", [1]),
        ("lang IN ('de', 'fr') OR id BETWEEN 3 AND 9", [2, 3]),
        ("exists(tags, t -> t > 2)", [2]),
        ("get(tags, 0) = 1 AND CAST(id AS string) LIKE '1%'", [1]),
        ("CASE WHEN size(tags) = 0 THEN true ELSE false END", [3]),
        ("coalesce(get_json_object('{\"a\": 1}', '$.a'), 'x') = '1' AND id = 1", [1]),
    ],
)
def test_plain_predicates_select_their_rows(spark, documents, where, ids):
    assert sorted(r.id for r in filter_rows(spark, documents, where, "/t/in").collect()) == ids


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("id IN (SELECT id FROM parquet.`/etc`)", "a subquery"),
        ("EXISTS (SELECT 1)", "a subquery"),
        ("(SELECT max(id) FROM range(3)) = id", "a subquery"),
        ("reflect('java.lang.System', 'exit', 1) = 1", "'reflect' is a built-in of group misc_funcs"),
        (
            "java_method('java.lang.Runtime', 'getRuntime') IS NULL",
            "'java_method' is a built-in of group misc",
        ),
        ("input_file_name() LIKE '%'", "'input_file_name' is a built-in of group misc_funcs"),
        ("xpath_string(text, '/a') = ''", "'xpath_string' is a built-in of group xml_funcs"),
        ("IDENTIFIER('reflect')('a', 'b') = 1", "IDENTIFIER"),
        ("main.udfs.score(text) > 0.5", "'main.udfs.score' is not one of Spark's built-in functions"),
        ("my_udf(text) > 0.5", "'my_udf' is not one of Spark's built-in functions"),
        ("id = :id", "NamedParameter"),
        ("id = 1; DROP TABLE t", "is not a SQL expression"),
        (
            "no_such_column = 1",
            "may only name the input's columns \\(id, lang, text, tags\\); 'no_such_column'",
        ),
        ("current_user = 'svc'", "'current_user' is not one of them"),
        ("abs(id) = 1 AND isnull(text) = false", None),
        ("lang", "does not apply to input table /t/in: .*not a boolean"),
        ("LANG = 'en' AND Tags IS NOT NULL AND id = 1", None),
    ],
)
def test_anything_but_a_plain_predicate_is_refused_naming_the_part(spark, documents, where, message):
    if message is None:  # a control: built-ins of the allowed groups over the input's columns pass
        assert filter_rows(spark, documents, where, "/t/in").count() == 1
        return
    with pytest.raises(RowFilterError, match=message):
        filter_rows(spark, documents, where, "/t/in")


def test_no_where_is_every_row(spark, documents):
    assert filter_rows(spark, documents, None, "/t/in") is documents
