"""Test-only integration for `cargo xtask ha-test` (never shipped).

Records what Home Assistant Core resolved for the `values:` of its
configuration (every value a `!secret NAME`): once at setup, as
`OUT/0.json`, and once more, as `OUT/1.json`, after a YAML reload that the
test asks for by creating the `trigger` file. The reload is the one every
integration's reload service does (`async_integration_yaml_config`: Core
reads configuration.yaml again, with a new Secrets, so secrets.yaml is read
again). Values are written with their Python type; the file is outside the
config folder, so no backup ever holds it.
"""

from datetime import timedelta
import json
import math
import os

from homeassistant.core import HomeAssistant
from homeassistant.helpers.event import async_track_time_interval
from homeassistant.helpers.reload import async_integration_yaml_config
from homeassistant.helpers.typing import ConfigType

DOMAIN = "hakeys_probe"


def encode(value):
    """[type, value] with the exact type Core's loader produced."""
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", "nan" if math.isnan(value) else repr(value)]
    if value is None:
        return ["null", None]
    if isinstance(value, str):
        return ["str", str(value)]
    return ["other", repr(type(value))]


def _write(path: str, values: dict) -> None:
    data = {key: encode(value) for key, value in values.items()}
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    conf = config[DOMAIN]
    out, trigger = conf["out"], conf["trigger"]
    await hass.async_add_executor_job(_write, os.path.join(out, "0.json"), conf["values"])
    reloaded = False

    async def _poll(_now) -> None:
        nonlocal reloaded
        if reloaded or not os.path.exists(trigger):
            return
        reloaded = True
        new = await async_integration_yaml_config(hass, DOMAIN)
        await hass.async_add_executor_job(
            _write, os.path.join(out, "1.json"), new[DOMAIN]["values"]
        )

    async_track_time_interval(hass, _poll, timedelta(milliseconds=200))
    return True
