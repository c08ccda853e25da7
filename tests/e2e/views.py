"""Checks every view of the page gets at desktop (1280x800) and phone (390x844) size: nothing wider than the
screen, no serious accessibility violation (axe-core, shipped by axe-playwright-python), and a screenshot."""

from __future__ import annotations

from tests.e2e.conftest import require

try:
    from axe_playwright_python.sync_playwright import Axe
except ImportError:
    Axe = None

SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
SERIOUS = ("serious", "critical")


def at_size(page, size: str) -> None:
    page.set_viewport_size(SIZES[size])


def fits_the_screen(page) -> None:
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    wide = page.evaluate("""() => [...document.querySelectorAll('body *')].filter(e => e.offsetParent !== null
        && e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
        .slice(0, 5).map(e => e.tagName + '#' + e.id + '.' + e.className)""")
    assert overflow <= 0 and not wide, f"wider than the screen by {overflow} px: {wide}"


def accessible(page, where: str) -> None:
    require(Axe is not None, "axe-playwright-python is missing: pip install -c constraints.txt -e '.[test]'")
    violations = Axe().run(page).response["violations"]
    serious = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in violations if v["impact"] in SERIOUS
    ]
    assert not serious, f"axe-core on {where}: {serious}"


def check_view(page, screenshot, name: str) -> None:
    """At both sizes: nothing wider than the screen, no serious accessibility violation, a screenshot."""
    for size in SIZES:
        at_size(page, size)
        fits_the_screen(page)
        accessible(page, f"{name} ({size})")
        screenshot(page, f"{name}-{size}")
    at_size(page, "desktop")
