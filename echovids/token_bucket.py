"""A token bucket kept in Redis, so every process on every host draws on one rate (YouTube calls, client requests)."""

from __future__ import annotations

# ARGV: rate per second, burst tokens, the longest wait in ms a caller accepts. Takes one token, or reserves the
# next one when it is due within that wait (the bucket goes negative: later callers queue behind), and answers
# the wait in ms (0: at once). When the next token is later than that, it takes nothing and answers minus the
# wait (a refused caller costs nothing more). Redis's own clock keeps hosts with skewed clocks in step.
SCRIPT = """
local rate = tonumber(ARGV[1]) / 1000
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens < 1 then wait = math.ceil((1 - tokens) / rate) end
if wait > max_wait then return -wait end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + wait + 1000)
return wait
"""
