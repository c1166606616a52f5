"""``redact_url``: passwords of URLs inside any text, secret query values, ``password=`` in free text."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from sqlalchemy.engine import make_url

from bench.tracking.redaction import MASK, redact_url

PASSWORDS = ["s3cret", "S3cret/PW", "p@ss", "p@ss/w:rd", "a?b", "x#y", "pa:ss", "%40enc%2F"]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("template", ["postgresql://cvae:{pw}@db-host:5432/optuna",
                                      "postgresql+psycopg://cvae:{pw}@db-host/optuna?sslmode=require",
                                      "mysql+pymysql://root:{pw}@127.0.0.1/x", "http://u:{pw}@tracking:5000"])
def test_password_is_masked_whatever_it_holds(template, password):
    url = template.format(pw=password)
    text = f"cannot open it (OperationalError: '{url}': connection refused), retry {url}"
    out = redact_url(text)
    assert password not in out, out
    # parsed back, the redacted URL has the mask for its password and the right host, for SQLAlchemy
    # (which ends a password at the first '@') and urllib (which ends the host part at the first '/')
    redacted = redact_url(url)
    assert make_url(redacted).password == MASK and urlsplit(redacted).password == MASK, redacted
    assert make_url(redacted).host == make_url(url.replace(password, "pw")).host
    assert f"{template.split('://')[0]}://" in out and MASK in out
    assert "db-host" in out or "127.0.0.1" in out or "tracking" in out  # the host is still shown


def test_the_issue_examples():
    assert redact_url("postgresql://u:S3cret/PW@host/db") == "postgresql://u:***@host/db"
    assert redact_url("postgresql://u:p@ss@host/db") == "postgresql://u:***@host/db"
    out = redact_url("postgresql://u@host/db?sslmode=verify-full&sslpassword=K3yPass&application_name=x")
    assert out == "postgresql://u@host/db?sslmode=verify-full&sslpassword=***&application_name=x"


@pytest.mark.parametrize("text", ["sqlite:///mlflow.db", "sqlite:////tmp/a@b/optuna.db", "http://127.0.0.1:5000",
                                  "models:/suite-cvae-digits@best", "mysql://root@localhost/db", "study.journal",
                                  "postgresql://cvae@db/optuna", "trial 3 FAIL epochs=10 lr=0.001", ""])
def test_text_without_secrets_is_unchanged(text):
    assert redact_url(text) == text


def test_secret_query_values_and_connection_strings():
    assert redact_url("sqlite:///x.db?password=s3cret") == "sqlite:///x.db?password=***"
    assert redact_url("http://h/api?token=abc;a=1&api_key=zz") == "http://h/api?token=***;a=1&api_key=***"
    out = redact_url("failed: host=db port=5432 user=cvae password=hunter2 sslpassword='k y' dbname=optuna")
    assert "hunter2" not in out and "k y" not in out and "user=cvae" in out and "dbname=optuna" in out


def test_several_urls_in_one_text():
    out = redact_url("a postgresql://a:one/1@h1/d, b mysql://b:two@2@h2/d; c=http://c:th?ree@h3")
    assert not any(s in out for s in ("one/1", "two@2", "th?ree")), out
    assert out.count(MASK) == 3
