"""Settings, masking and the recording transport."""

import pytest

from phi3lab.azure.dryrun import RecordingTransport, Reply
from phi3lab.azure.roles import AZURE_AI_DEVELOPER
from phi3lab.azure.settings import AzureSettingsError, load_settings, mask, mask_secrets, settings_state

SUB = "12345678-90ab-cdef-1234-567890abcdef"


def test_no_settings_anywhere_gives_none(tmp_path):
    assert load_settings(tmp_path / "absent.yaml", environ={}) is None
    assert settings_state(environ={}).startswith("absent")


def test_environment_wins_over_file(tmp_path):
    file = tmp_path / "azure-settings.yaml"
    file.write_text(f"subscription_id: {SUB}\nresource_group: rg-file\nproject: proj-file\n")
    settings = load_settings(file, environ={"AZURE_RESOURCE_GROUP": "rg-env", "AZURE_LOCATION": "eastus2"})
    assert (settings.subscription_id, settings.resource_group, settings.project, settings.region) == (
        SUB, "rg-env", "proj-file", "eastus2")


def test_partial_settings_name_the_missing_fields(tmp_path):
    with pytest.raises(AzureSettingsError, match="resource_group.*AZURE_RESOURCE_GROUP.*project"):
        load_settings(tmp_path / "absent.yaml", environ={"AZURE_SUBSCRIPTION_ID": SUB})


def test_unknown_key_in_file_is_named(tmp_path):
    file = tmp_path / "azure-settings.yaml"
    file.write_text("subscription: x\n")
    with pytest.raises(AzureSettingsError, match="unknown setting.*subscription"):
        load_settings(file, environ={})


def test_repr_and_text_never_show_the_subscription(tmp_path):
    settings = load_settings(tmp_path / "x.yaml", environ={"AZURE_SUBSCRIPTION_ID": SUB, "AZURE_RESOURCE_GROUP": "rg",
                                                           "AZURE_AI_PROJECT": "p"})
    assert SUB not in repr(settings) and SUB not in str(settings)
    assert mask(SUB) == "1234…"
    text = mask_secrets(f"/subscriptions/{SUB}/x Authorization: Bearer eyJhbGciOi.eyJvaWQiOiJ4In0.sig "
                        f"key=supersecret42value primaryKey\": \"abcdef123456\" role {AZURE_AI_DEVELOPER}")
    assert SUB not in text and "supersecret42value" not in text and "abcdef123456" not in text and "eyJ" not in text
    assert AZURE_AI_DEVELOPER in text  # public role ids stay readable


def test_a_yaml_error_names_the_line_but_never_its_content(tmp_path):
    file = tmp_path / "azure-settings.yaml"
    file.write_text(f"resource_group: rg\nsubscription_id {SUB}: [\n  key1: 4f3e2d1c0b9a88776655443322110ffe\n")
    with pytest.raises(AzureSettingsError, match=r"line \d+, column \d+") as failure:
        load_settings(file, environ={})
    assert SUB not in str(failure.value) and SUB[:8] not in str(failure.value) and "4f3e2d1c" not in str(failure.value)


def test_a_secret_pasted_as_a_setting_name_is_masked(tmp_path):
    file = tmp_path / "azure-settings.yaml"
    file.write_text(f"{SUB}: x\n")
    with pytest.raises(AzureSettingsError, match="unknown setting") as failure:
        load_settings(file, environ={})
    assert SUB not in str(failure.value)


def test_recording_transport_routes_and_records():
    from azure.core import PipelineClient
    from azure.core.rest import HttpRequest

    transport = RecordingTransport([("GET", r"/things/(?P<n>\w+)", lambda req, m: Reply(200, {"n": m["n"]}))])
    client = PipelineClient("https://example.test", transport=transport)
    assert client.send_request(HttpRequest("GET", "https://example.test/things/abc?api-version=1")).json() == {"n": "abc"}
    missing = client.send_request(HttpRequest("GET", "https://example.test/other"))
    assert missing.status_code == 404 and "no route" in missing.json()["error"]["message"]
    assert [r.api_version for r in transport.requests] == ["1", None]
