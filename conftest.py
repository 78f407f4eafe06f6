"""pytest hooks for every run from the repository root.

Under nbval (``make nbval``: every notebook executed with the CI profile), each cell's fresh
outputs are scanned for keys, tokens and subscription IDs, so CI checks what the executed
notebooks show, not only what is committed.
"""

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    result = yield
    outputs = getattr(item, "test_outputs", None)  # set by nbval for each executed cell
    if outputs:
        from phi3lab.course import cell_texts, find_secrets

        executed = {"source": "", "outputs": outputs}  # the source is checked in the committed file
        found = [f"{kind} '{masked}'" for text in cell_texts(executed) for kind, masked in find_secrets(text)]
        if found:
            pytest.fail(f"cell output shows secret-looking strings: {'; '.join(found)}. Print masked values "
                        "(phi3lab masks settings) and never a key, token or subscription ID.", pytrace=False)
    return result
