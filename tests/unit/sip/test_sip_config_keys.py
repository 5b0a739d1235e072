"""``[sip] default_country`` and ``min_expires``: validated, carried into the gateway."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from p2pnode.app.sip_config import SipSection, to_gateway
from p2pnode.directory.e164 import normalise_e164


def test_default_country_is_validated_and_reaches_the_gateway() -> None:
    section = SipSection.model_validate({"default_country": "de", "min_expires": 120})
    config = to_gateway(section, "gw.test")
    assert config.default_country == "DE" and config.min_expires == 120
    # what the router then does with a national number a phone dials
    assert normalise_e164("030 5550100", config.default_country) == "+49305550100"
    assert to_gateway(SipSection.model_validate({}), "gw.test").default_country is None


@pytest.mark.parametrize(
    ("values", "path"),
    [
        ({"default_country": "XX"}, "default_country"),
        ({"default_country": "Germany"}, "default_country"),
        ({"min_expires": 0}, "min_expires"),
        ({"min_expires": 7200}, "min_expires"),
    ],
)
def test_mistakes_are_named_by_their_key(values: dict[str, object], path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SipSection.model_validate(values)
    assert [error["loc"][0] for error in caught.value.errors()] == [path]
