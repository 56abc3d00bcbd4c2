pytest_plugins = [
    "tests.support.fixtures_store",
    "tests.support.fixtures_http",
    "tests.support.fixtures_mail",
    "tests.support.fixtures_web",
]
