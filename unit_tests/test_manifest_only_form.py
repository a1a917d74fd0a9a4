"""The repository's own manifest.yaml and components.py are already in manifest-only form."""

from scripts import manifest_only


def test_the_repository_files_are_in_manifest_only_form():
    assert manifest_only.problems() == []


def test_a_future_import_statement_is_found_but_words_about_it_are_not():
    assert manifest_only.FUTURE_ANNOTATIONS.search("import os\nfrom __future__ import annotations\n")
    assert not manifest_only.FUTURE_ANNOTATIONS.search('"""has no `from __future__ import annotations`"""\n')


def test_the_manifest_only_metadata_names_the_runtime_image_of_the_pinned_cdk():
    metadata = {"data": {"name": "Klarna", "tags": ["language:python"], "remoteRegistries": {"pypi": {}}}}
    data = manifest_only.manifest_only_metadata(metadata, "7.39.1")["data"]
    assert data["tags"] == ["language:manifest-only", "cdk:low-code"]
    assert data["connectorBuildOptions"] == {"baseImage": "docker.io/airbyte/source-declarative-manifest:7.39.1"}
    assert "remoteRegistries" not in data
