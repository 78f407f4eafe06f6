"""Serving and evaluation import the training artifacts and chat format without the trainer."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["phi3lab.training.artifacts", "phi3lab.training.chat_format"])
def test_module_does_not_import_the_trainer(module):
    code = f"import json, sys, {module}; print(json.dumps([m for m in sys.modules if m.startswith('phi3lab.')]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert module in loaded and "phi3lab.training.trainer" not in loaded, loaded


def test_package_names_resolve_from_their_owner_modules():
    import phi3lab.training as training
    from phi3lab.training import artifacts, chat_format, trainer

    assert training.load_trained is artifacts.load_trained
    assert training.tokenize_conversation is chat_format.tokenize_conversation
    assert training.train is trainer.train
    with pytest.raises(AttributeError, match="no attribute 'output_dir'"):
        training.output_dir  # noqa: B018
