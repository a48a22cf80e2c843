"""ServeSettings: defaults from the brief, invalid values refused with the field named."""
from __future__ import annotations

import pytest

from splip_engine.serve import ServeSettings


def test_defaults():
    settings = ServeSettings()
    assert (settings.host, settings.port, settings.max_batch, settings.max_wait_ms, settings.queue_size,
            settings.max_body_bytes, settings.max_k) == ("127.0.0.1", 8000, 32, 5.0, 256, 10 * 1024 * 1024, 1000)


@pytest.mark.parametrize("field, value, message", [
    ("max_batch", 0, r"ServeSettings.max_batch=0: must be an int >= 1"),
    ("queue_size", 2.5, r"ServeSettings.queue_size=2.5: must be an int >= 1"),
    ("max_k", 10**6, r"ServeSettings.max_k=1000000: the gallery index searches at most k=10000"),
    ("port", 70000, r"ServeSettings.port=70000: must be an int in 0..65535"),
    ("max_wait_ms", -1, r"ServeSettings.max_wait_ms=-1: must be a number >= 0"),
])
def test_invalid_values_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        ServeSettings(**{field: value})
