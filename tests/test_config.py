"""The configuration contract: TOML + AOMAS_<SECTION>_<KEY>, every key documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import DESTINATION_KEYS, SETTINGS, load_config
from appliance.exceptions import ConfigurationError

README = Path(__file__).resolve().parent.parent / "README.md"


def test_built_in_defaults_match_the_design(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.source == "built-in defaults"
    assert config.dicom.ae_title == "AOMAS" and config.dicom.port == 11112
    assert config.dicom.allowed_calling_aes == []
    assert config.dicom.series_idle_seconds == 10
    assert config.web.bind == "127.0.0.1" and config.web.port == 8080
    assert config.queue.backend == "sqlite"
    assert config.data_dir == tmp_path / "var"


def test_toml_then_environment_override(tmp_path):
    path = tmp_path / "aomas.toml"
    path.write_text('[dicom]\nport = 4000\nallowed_calling_aes = ["A", "B"]\n'
                    '[[destinations]]\nname = "pacs"\nport = 4242\n')
    config = load_config(str(path), environ={"AOMAS_DICOM_PORT": "5000",
                                             "AOMAS_WEB_BIND": "0.0.0.0"})
    assert config.dicom.port == 5000
    assert config.web.bind == "0.0.0.0"
    assert config.dicom.allowed_calling_aes == ["A", "B"]
    assert config.destinations[0]["kind"] == "dimse"
    env = load_config(str(path), environ={"AOMAS_DICOM_ALLOWED_CALLING_AES": "X, Y"})
    assert env.dicom.allowed_calling_aes == ["X", "Y"]


def test_aomas_config_environment_variable_names_the_file(tmp_path):
    path = tmp_path / "elsewhere.toml"
    path.write_text("[web]\nport = 9999\n")
    assert load_config(environ={"AOMAS_CONFIG": str(path)}).web.port == 9999


@pytest.mark.parametrize("text, message", [
    ("[dicom]\nprot = 1\n", "unknown key 'prot' in [dicom]"),
    ("[dicmo]\nport = 1\n", "unknown section [dicmo]"),
    ("[dicom]\nport = 'eleven'\n", "dicom.port must be a int"),
    ("[dicom\n", "not valid TOML"),
    ('[[destinations]]\nname = "x"\nkind = "ftp"\n', "kind must be 'dimse' or 'orthanc'"),
    ('[[destinations]]\nname = "x"\ntransfer_syntax = "jpeg2000"\n',
     "transfer_syntax must be one of uncompressed, rle, jpeg-ls"),
    ('[[destinations]]\nname = "x"\n[[destinations]]\nname = "x"\n', "share a name"),
    ('[[destinations]]\nname = "x"\ntls = "yes"\n', "tls must be true or false"),
    ('[[destinations]]\nname = "x"\ntls = true\n', "has tls = true but no CA bundle"),
])
def test_mistakes_are_reported_by_name(tmp_path, text, message):
    path = tmp_path / "aomas.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[")):
        load_config(str(path), environ={})


def test_every_key_is_documented_in_the_readme():
    readme = README.read_text()
    missing = [f"{s.section}.{s.key}" for s in SETTINGS
               if f"`{s.section}.{s.key}`" not in readme or s.env_var not in readme]
    missing += [f"destinations[].{k}" for k in DESTINATION_KEYS
                if f"`destinations[].{k}`" not in readme]
    assert not missing, f"document these keys in README.md (`aomas config --reference`): {missing}"


def test_cli_exits_with_a_one_line_reason_on_a_bad_config(tmp_path):
    from tests.conftest import Box
    box = Box(tmp_path)
    box.config_path.write_text("[dicom]\nport = 'x'\n")
    result = box.aomas("runs", "list", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0
    assert "dicom.port must be a int" in result.stderr
