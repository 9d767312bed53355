/*
 * queue/scripts.c - the Lua scripts that make multi-key changes atomic.
 *
 * Why scripts and not MULTI/EXEC: each of these decides what to write from what it
 * reads (is there a live message for this attempt? does the index still point at the
 * entry being acked? is this entry still pending for this consumer?). MULTI cannot
 * read in the middle of a transaction, and WATCH would need retry loops and more round
 * trips. A script runs atomically on the server in one round trip. They are loaded
 * with SCRIPT LOAD on every connection and called with EVALSHA (EVAL if the cache was
 * flushed). Every key a script touches is passed in KEYS.
 *
 * The message index (<prefix>msg) maps an attempt id to "<entry id> <queue name>";
 * queue names contain no space. Step entries carry the attempt id in a field "a" next
 * to the message "m", so acking an entry can find its index record without parsing
 * the JSON.
 */
#include "queue/queue_int.h"

const char *const queue_script_source[QUEUE_NSCRIPTS] = {
    /* KEYS: stream, index. ARGV: attempt id, message, queue name.
     * Returns {1, new id}, or {0, id of the live message the attempt already has}. */
    [QUEUE_SCRIPT_DISPATCH] =
        "local cur = redis.call('HGET', KEYS[2], ARGV[1])\n"
        "if cur then\n"
        "  local sp = string.find(cur, ' ', 1, true)\n"
        "  if sp then\n"
        "    local id = string.sub(cur, 1, sp - 1)\n"
        "    if string.sub(cur, sp + 1) ~= ARGV[3]\n"
        "       or #redis.call('XRANGE', KEYS[1], id, id) > 0 then\n"
        "      return {0, id}\n"
        "    end\n"
        "  end\n"
        "end\n"
        "local id = redis.call('XADD', KEYS[1], '*', 'm', ARGV[2], 'a', ARGV[1])\n"
        "redis.call('HSET', KEYS[2], ARGV[1], id .. ' ' .. ARGV[3])\n"
        "return {1, id}\n",

    /* KEYS: stream, index. ARGV: attempt id, queue name. Returns 1 or 0; removes an
     * index record whose entry is gone. */
    [QUEUE_SCRIPT_HAS_MESSAGE] =
        "local cur = redis.call('HGET', KEYS[2], ARGV[1])\n"
        "if not cur then return 0 end\n"
        "local sp = string.find(cur, ' ', 1, true)\n"
        "if sp then\n"
        "  local id = string.sub(cur, 1, sp - 1)\n"
        "  if string.sub(cur, sp + 1) ~= ARGV[2] then return 1 end\n"
        "  if #redis.call('XRANGE', KEYS[1], id, id) > 0 then return 1 end\n"
        "end\n"
        "redis.call('HDEL', KEYS[2], ARGV[1])\n"
        "return 0\n",

    /* KEYS: stream, index. ARGV: group, attempt id, queue name. Returns the number of
     * entries deleted (0 or 1). */
    [QUEUE_SCRIPT_WITHDRAW] = "local cur = redis.call('HGET', KEYS[2], ARGV[2])\n"
                              "if not cur then return 0 end\n"
                              "local sp = string.find(cur, ' ', 1, true)\n"
                              "if sp and string.sub(cur, sp + 1) ~= ARGV[3] then return 0 end\n"
                              "local n = 0\n"
                              "if sp then\n"
                              "  local id = string.sub(cur, 1, sp - 1)\n"
                              "  redis.call('XACK', KEYS[1], ARGV[1], id)\n"
                              "  n = redis.call('XDEL', KEYS[1], id)\n"
                              "end\n"
                              "redis.call('HDEL', KEYS[2], ARGV[2])\n"
                              "return n\n",

    /* KEYS: stream, index. ARGV: group, entry id, queue name. Acks and deletes the
     * entry; removes its index record if the record still names this entry (a newer
     * dispatch of the attempt keeps its own). Returns acked + deleted. */
    [QUEUE_SCRIPT_ACK_STEP] = "local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])\n"
                              "local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
                              "n = n + redis.call('XDEL', KEYS[1], ARGV[2])\n"
                              "if e[1] then\n"
                              "  local f = e[1][2]\n"
                              "  for i = 1, #f - 1, 2 do\n"
                              "    if f[i] == 'a' and redis.call('HGET', KEYS[2], f[i + 1])\n"
                              "                       == ARGV[2] .. ' ' .. ARGV[3] then\n"
                              "      redis.call('HDEL', KEYS[2], f[i + 1])\n"
                              "    end\n"
                              "  end\n"
                              "end\n"
                              "return n\n",

    /* KEYS: stream. ARGV: group, consumer, entry ids... Resets the idle time of each
     * entry pending for this consumer, never claiming another's. Returns per id 0 (pending
     * for nobody), 1 (ours, refreshed) or 2 (another consumer's). */
    [QUEUE_SCRIPT_REFRESH] =
        "local owner = {}\n"
        "local exists = redis.call('EXISTS', KEYS[1]) == 1\n"
        "for i = 3, #ARGV do\n"
        "  local o = 0\n"
        "  if exists then\n"
        "    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
        "    if p[1] and p[1][2] ~= ARGV[2] then\n"
        "      o = 2\n"
        "    elseif p[1] then\n"
        "      local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')\n"
        "      if #c > 0 then o = 1 end\n"
        "    end\n"
        "  end\n"
        "  owner[#owner + 1] = o\n"
        "end\n"
        "return owner\n",

    /* KEYS: stream. ARGV: group, entry ids... Returns the number acked. */
    [QUEUE_SCRIPT_ACK_EVENTS] = "local ids = {unpack(ARGV, 2)}\n"
                                "local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))\n"
                                "redis.call('XDEL', KEYS[1], unpack(ids))\n"
                                "return n\n",

    /* KEYS: worker key, workers set. ARGV: ttl ms, info, worker id. Returns the server
     * time in ms, which is also the recorded last-seen time. */
    [QUEUE_SCRIPT_HEARTBEAT] =
        "local t = redis.call('TIME')\n"
        "local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])\n"
        "redis.call('ZADD', KEYS[2], string.format('%d', ms), ARGV[3])\n"
        "return ms\n",

    /* KEYS: workers set. Returns {server time ms, {id, last seen, ...}}. */
    [QUEUE_SCRIPT_LIST_WORKERS] =
        "local t = redis.call('TIME')\n"
        "local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
        "return {ms, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}\n",

    /* KEYS: worker key, workers set. ARGV: worker id. */
    [QUEUE_SCRIPT_FORGET_WORKER] = "redis.call('DEL', KEYS[1])\n"
                                   "return redis.call('ZREM', KEYS[2], ARGV[1])\n",

    /* KEYS: stream. ARGV: group. Returns {length, pending, id of the oldest entry not
     * yet delivered to the group or ''}. */
    [QUEUE_SCRIPT_STATS] =
        "local len = redis.call('XLEN', KEYS[1])\n"
        "if len == 0 then return {0, 0, ''} end\n"
        "local pending, last = 0, '0-0'\n"
        "local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])\n"
        "if groups.err == nil then\n"
        "  for _, g in ipairs(groups) do\n"
        "    local h = {}\n"
        "    for i = 1, #g - 1, 2 do h[g[i]] = g[i + 1] end\n"
        "    if h['name'] == ARGV[1] then\n"
        "      pending, last = h['pending'], h['last-delivered-id']\n"
        "    end\n"
        "  end\n"
        "end\n"
        "local first = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)\n"
        "return {len, pending, first[1] and first[1][1] or ''}\n",

    /* KEYS: events stream. ARGV: messages... Appends each, in order, as field "m".
     * Returns their ids. */
    [QUEUE_SCRIPT_PUBLISH_EVENTS] = "local ids = {}\n"
                                    "for i = 1, #ARGV do\n"
                                    "  ids[i] = redis.call('XADD', KEYS[1], '*', 'm', ARGV[i])\n"
                                    "end\n"
                                    "return ids\n",

    /* KEYS: stream, index. ARGV: queue name, then attempt id and payload pairs. DISPATCH
     * for each pair. Returns {created, id, created, id, ...}. */
    [QUEUE_SCRIPT_DISPATCH_MANY] =
        "local out = {}\n"
        "for i = 2, #ARGV, 2 do\n"
        "  local a, m, sent = ARGV[i], ARGV[i + 1], nil\n"
        "  local cur = redis.call('HGET', KEYS[2], a)\n"
        "  if cur then\n"
        "    local sp = string.find(cur, ' ', 1, true)\n"
        "    if sp then\n"
        "      local id = string.sub(cur, 1, sp - 1)\n"
        "      if string.sub(cur, sp + 1) ~= ARGV[1]\n"
        "         or #redis.call('XRANGE', KEYS[1], id, id) > 0 then\n"
        "        sent = id\n"
        "      end\n"
        "    end\n"
        "  end\n"
        "  if sent then\n"
        "    out[#out + 1] = 0\n"
        "    out[#out + 1] = sent\n"
        "  else\n"
        "    local id = redis.call('XADD', KEYS[1], '*', 'm', m, 'a', a)\n"
        "    redis.call('HSET', KEYS[2], a, id .. ' ' .. ARGV[1])\n"
        "    out[#out + 1] = 1\n"
        "    out[#out + 1] = id\n"
        "  end\n"
        "end\n"
        "return out\n",

    /* KEYS: stream, index. ARGV: group, queue name, entry ids... ACK_STEP for each id; a
     * missing group (Redis lost its data) acks nothing and is not an error. Returns acked +
     * deleted. */
    [QUEUE_SCRIPT_ACK_STEPS] = "local n = 0\n"
                               "for i = 3, #ARGV do\n"
                               "  local id = ARGV[i]\n"
                               "  local e = redis.call('XRANGE', KEYS[1], id, id)\n"
                               "  local a = redis.pcall('XACK', KEYS[1], ARGV[1], id)\n"
                               "  if type(a) == 'number' then n = n + a end\n"
                               "  n = n + redis.call('XDEL', KEYS[1], id)\n"
                               "  if e[1] then\n"
                               "    local f = e[1][2]\n"
                               "    for j = 1, #f - 1, 2 do\n"
                               "      if f[j] == 'a' and redis.call('HGET', KEYS[2], f[j + 1])\n"
                               "                         == id .. ' ' .. ARGV[2] then\n"
                               "        redis.call('HDEL', KEYS[2], f[j + 1])\n"
                               "      end\n"
                               "    end\n"
                               "  end\n"
                               "end\n"
                               "return n\n",
};
