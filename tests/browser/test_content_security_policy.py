"""Pages work under the Content-Security-Policy in a real browser: no violation is reported."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.django_db(transaction=True)

WATCH_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation',
    e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


@pytest.mark.parametrize("path", ["/", "/search/?q=red", "/api/docs/", "/admin/login/"])
def test_page_runs_without_csp_violations(browser: Any, live_server: Any, path: str) -> None:
    page = browser.new_page()
    page.add_init_script(WATCH_VIOLATIONS)
    page.goto(live_server.url + path)
    page.wait_for_load_state("networkidle")
    if path == "/api/docs/":
        page.wait_for_selector(".swagger-ui .info", timeout=15_000)
    assert page.evaluate("window.__cspViolations") == []
    assert "Content-Security-Policy" in {h.title() for h in page.context.request.get(
        live_server.url + path).headers}  # fmt: skip
