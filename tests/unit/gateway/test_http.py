"""Request decoding names the field; metrics are valid Prometheus text."""

from __future__ import annotations

import msgspec
import pytest

from ucloud.errors import InputError
from ucloud.gateway.http import decode_body, field_and_reason
from ucloud.gateway.metrics import RequestMetrics
from ucloud.gateway.schemas import VmCreate
from ucloud.metrics import exposition

DECODER = msgspec.json.Decoder(VmCreate)
GOOD = b'{"name":"web","cpu":1,"ram":"1G","ssd":10,"image":"debian"}'


def test_a_good_body_decodes_with_defaults() -> None:
    body = decode_body(DECODER, GOOD)
    assert body.hdd == 0 and body.networks == [] and body.keys is None and body.restart == "always"


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        (b'{"name":"web","cpu":1,"ram":1,"ssd":1,"image":"i","colour":"red"}', "colour",
         "unknown field"),
        (b'{"cpu":1,"ram":1,"ssd":1,"image":"i"}', "name", "required field is missing"),
        (b'{"name":"web","cpu":"one","ram":1,"ssd":1,"image":"i"}', "cpu", "Expected `int`"),
        (b'{"name":"web","cpu":1,"ram":[1],"ssd":1,"image":"i"}', "ram", "Expected `int | str`"),
        (b'{"name":"web","cpu":1,"ram":1,"ssd":1,"image":"i","networks":["a",3]}', "networks[1]",
         "Expected `str`"),
        (b'{"name":"web","cpu":1,"ram":1,"ssd":1,"image":"i","restart":"sometimes"}', "restart",
         "Invalid enum value"),
        (b'[1]', "", "Expected `object`"),
        (b'{"name":', "", "not valid JSON"),
        (b"", "", "body is required"),
    ],
)
def test_bad_bodies_name_the_field(data: bytes, field: str, reason: str) -> None:
    with pytest.raises(InputError) as caught:
        decode_body(DECODER, data)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_nested_unknown_field_path() -> None:
    assert field_and_reason("Object contains unknown field `x` - at `$.spec`") == (
        "spec.x", "unknown field"
    )


def test_metrics_exposition() -> None:
    metrics = RequestMetrics()
    metrics.observe("GET", "/v1/vms/{id}", 200, 0.002)
    metrics.observe("GET", "/v1/vms/{id}", 200, 0.2)
    metrics.observe("GET", "/v1/vms/{id}", 404, 0.0001)
    text = exposition(metrics.collect()).decode()
    lines = text.splitlines()
    assert 'ucloud_http_requests_total{method="GET",route="/v1/vms/{id}",status="200"} 2' in lines
    assert (
        'ucloud_http_request_duration_seconds_bucket{le="0.0025",method="GET",'
        'route="/v1/vms/{id}",status="200"} 1' in lines
    )
    assert (
        'ucloud_http_request_duration_seconds_bucket{le="+Inf",method="GET",'
        'route="/v1/vms/{id}",status="200"} 2' in lines
    )
    assert "# TYPE ucloud_http_request_duration_seconds histogram" in lines
    for line in lines:
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2
