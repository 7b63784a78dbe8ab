"""Lua shared by the store's scripts: the server's clock in ms, and waking the next
live waiter of a list of waiter ids (see waiters.py)."""

from __future__ import annotations

__all__ = ["PRELUDE"]

PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function wake_next(waiters, prefix)
  while true do
    local id = redis.call('LPOP', waiters)
    if not id then return end
    if redis.call('EXISTS', prefix .. 'alive:' .. id) == 1 then
      redis.call('RPUSH', prefix .. 'wake:' .. id, 1)
      redis.call('PEXPIRE', prefix .. 'wake:' .. id, 60000)
      return
    end
  end
end
"""
