"""The official openai Python SDK against Tollgate's gateway (dialect =
"openai"): run by tests/openai_sdk.rs with the gateway's base URL, a live
tenant key and the key of a tenant whose monthly quota is spent."""
import sys

import openai

base, key, spent = sys.argv[1:4]
ask = dict(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)

# A plain call, with the rate-limit headers.
raw = client.chat.completions.with_raw_response.create(**ask)
assert raw.headers.get("ratelimit-policy"), dict(raw.headers)
completion = raw.parse()
assert completion.choices[0].message.content == "hello world", completion
assert completion.usage.total_tokens == 7, completion.usage

# A stream without include_usage, read by the most common loop: every
# chunk has a choice (the usage chunk the gateway asked for on the
# client's behalf is not forwarded; with it, chunk.choices[0] raised
# IndexError).
text = ""
for chunk in client.chat.completions.create(stream=True, **ask):
    assert chunk.usage is None, chunk
    text += chunk.choices[0].delta.content or ""
assert text == "hello world", text

# A stream with include_usage: the usage comes last.
chunks = list(
    client.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, **ask
    )
)
assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7, chunks[-1]

# The Responses API, plain: the SDK reads the answer and its usage.
resp = client.responses.create(model="gpt-4o-mini", input="hi")
assert resp.output_text == "hello world", resp
assert resp.usage.input_tokens_details.cached_tokens == 2, resp.usage
assert resp.usage.output_tokens_details.reasoning_tokens == 1, resp.usage

# Streamed: the SDK's events arrive whole, the usage in response.completed.
text, final = "", None
for event in client.responses.create(model="gpt-4o-mini", input="hi", stream=True):
    if event.type == "response.output_text.delta":
        text += event.delta
    elif event.type == "response.completed":
        final = event.response
assert text == "hello world", text
assert final is not None and final.usage.total_tokens == 7, final

# Embeddings.
emb = client.embeddings.create(model="text-embedding-3-small", input="hi")
assert emb.data[0].embedding == [0.5, -0.25], emb
assert emb.usage.prompt_tokens == 5, emb.usage

# A spent quota: RateLimitError with Tollgate's reason, OpenAI's code.
try:
    openai.OpenAI(base_url=base, api_key=spent, max_retries=0).chat.completions.create(**ask)
    raise SystemExit("a spent quota was let through")
except openai.RateLimitError as e:
    assert e.code == "insufficient_quota", (e.code, e.body)
    assert "monthly call quota exceeded" in str(e), str(e)
    assert int(e.response.headers["retry-after"]) > 0

# With the SDK's own retries on (its default, 2): it is told not to retry
# a spent monthly quota, and sends the request once.
sent = []
retrying = openai.OpenAI(
    base_url=base,
    api_key=spent,
    http_client=openai.DefaultHttpxClient(event_hooks={"request": [sent.append]}),
)
try:
    retrying.chat.completions.create(**ask)
    raise SystemExit("a spent quota was let through")
except openai.RateLimitError as e:
    assert e.response.headers["x-should-retry"] == "false", e.response.headers
assert len(sent) == 1, f"the SDK sent a spent quota's request {len(sent)} times"

# An unknown key: AuthenticationError.
try:
    openai.OpenAI(base_url=base, api_key="tg_unknown", max_retries=0).chat.completions.create(**ask)
    raise SystemExit("an unknown key was let through")
except openai.AuthenticationError as e:
    assert e.code == "invalid_api_key", (e.code, e.body)

print("sdk ok")
