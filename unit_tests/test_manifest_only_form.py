"""The repository's own manifest.yaml and components.py are already in manifest-only form."""

from scripts import manifest_only


def test_the_repository_files_are_in_manifest_only_form():
    assert manifest_only.problems() == []


def test_a_future_import_statement_is_found_but_words_about_it_are_not():
    assert manifest_only.FUTURE_ANNOTATIONS.search("import os\nfrom __future__ import annotations\n")
    assert not manifest_only.FUTURE_ANNOTATIONS.search('"""has no `from __future__ import annotations`"""\n')

