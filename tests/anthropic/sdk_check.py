"""The official anthropic Python SDK against Tollgate's gateway (dialect =
"anthropic"): run by tests/anthropic_sdk.rs with the gateway's base URL, a
live tenant key and the key of a tenant whose monthly quota is spent."""
import sys

import anthropic

base, key, spent = sys.argv[1:4]
ask = dict(
    model="claude-3-5-haiku-latest",
    max_tokens=16,
    messages=[{"role": "user", "content": "hi"}],
)

client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)

# A plain call, with the rate-limit headers.
raw = client.messages.with_raw_response.create(**ask)
assert raw.headers.get("ratelimit-policy"), dict(raw.headers)
message = raw.parse()
assert message.content[0].text == "hello world", message
assert message.usage.output_tokens == 4, message.usage

# A stream, read by the SDK's own helper: the text and the final usage.
with client.messages.stream(**ask) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == "hello world", text
assert final.usage.output_tokens == 4, final.usage

# A spent quota: RateLimitError, Anthropic's error type, Tollgate's reason.
try:
    anthropic.Anthropic(base_url=base, api_key=spent, max_retries=0).messages.create(**ask)
    raise SystemExit("a spent quota was let through")
except anthropic.RateLimitError as e:
    assert e.body["type"] == "error", e.body
    assert e.body["error"]["type"] == "rate_limit_error", e.body
    assert "monthly call quota exceeded" in str(e), str(e)
    assert int(e.response.headers["retry-after"]) > 0

# With the SDK's own retries on (its default, 2): it is told not to retry
# a spent monthly quota, and sends the request once.
sent = []
retrying = anthropic.Anthropic(
    base_url=base,
    api_key=spent,
    http_client=anthropic.DefaultHttpxClient(event_hooks={"request": [sent.append]}),
)
try:
    retrying.messages.create(**ask)
    raise SystemExit("a spent quota was let through")
except anthropic.RateLimitError as e:
    assert e.response.headers["x-should-retry"] == "false", e.response.headers
assert len(sent) == 1, f"the SDK sent a spent quota's request {len(sent)} times"

# An unknown key: AuthenticationError.
try:
    anthropic.Anthropic(base_url=base, api_key="tg_unknown", max_retries=0).messages.create(**ask)
    raise SystemExit("an unknown key was let through")
except anthropic.AuthenticationError as e:
    assert e.body["error"]["type"] == "authentication_error", e.body

print("sdk ok")
