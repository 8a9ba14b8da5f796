from decimal import Decimal

import pytest

from calo_assets.node_inspect import UNDEFINED, InspectError, JsNumber, Placeholder, parse_inspect


def test_multiline_transaction_object_keeps_numbers_as_text():
    obj = parse_inspect("""{
  transaction: {
    id: '01HPJ4BT09Y3GYQQZD1XFEGDHT',
    paymentBalance: 60.181000000000004,
    amount: -8,
    updatePaymentBalance: true,
    metadata: '{"walletId":"wallet#df06"}'
  }
}""")
    t = obj["transaction"]
    assert t["paymentBalance"] == JsNumber("60.181000000000004")
    assert t["paymentBalance"].decimal() == Decimal("60.181000000000004")
    assert t["amount"].decimal() == Decimal("-8")
    assert t["updatePaymentBalance"] is True
    assert t["metadata"] == '{"walletId":"wallet#df06"}'


@pytest.mark.parametrize("text, expected", [
    ("\"it's\"", "it's"),
    ("`back\\`tick`", "back`tick"),
    ("'a\\'b\\n\\u00e9\\x41'", "a'b\néA"),
    ("'البحرين'", "البحرين"),
])
def test_strings_in_every_quote_style(text, expected):
    assert parse_inspect(text) == expected


def test_words_placeholders_arrays_and_one_line_form():
    obj = parse_inspect("{ a: undefined, b: null, c: false, d: [Object], e: [ 1, 'x', [Array] ], "
                        "f: [Function: f], 'quoted-key': 1 }")
    assert obj["a"] is UNDEFINED and obj["b"] is None and obj["c"] is False
    assert obj["d"] == Placeholder("[Object]") and obj["e"][2] == Placeholder("[Array]")
    assert obj["f"] == Placeholder("[Function: f]") and obj["quoted-key"] == JsNumber("1")


def test_json_is_read_too():
    assert parse_inspect('{"id":"x","n":[1.5,{"k":null}]}') == {"id": "x", "n": [JsNumber("1.5"), {"k": None}]}


@pytest.mark.parametrize("text, where", [
    ("{ a: 1", "not closed"),
    ("{ a: 'x }", "string not closed"),
    ("{ a: 1 b: 2 }", "expected ','"),
    ("{ a: 1.2.3 }", "bad number"),
    ("{ a: 1 } trailing", "after the value"),
])
def test_malformed_objects_say_what_and_where(text, where):
    with pytest.raises(InspectError, match=where) as err:
        parse_inspect(text)
    assert "at character" in str(err.value)
